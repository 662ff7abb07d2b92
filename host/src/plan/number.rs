//! How a metric's or a threshold's number is shown to operators. It lives
//! with thresholds because a judgement's reason (`duplicates = 2`) is
//! written here; reports show metrics the same way through it.

/// A number as operators read it: integers plainly, others with 4 decimals.
pub fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::number;

    #[test]
    fn integers_plainly_others_with_four_decimals() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(-3.0), "-3");
        assert_eq!(number(0.95), "0.9500");
        assert_eq!(number(1e15), "1000000000000000.0000");
        assert_eq!(number(f64::NAN), "NaN");
    }
}
