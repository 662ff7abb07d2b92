//! PostgreSQL values to and from sluice's row encoding.
//!
//! Results arrive in PostgreSQL's binary format and are mapped by type:
//! integers and booleans to `integer`, floats to `real`, `bytea` to `blob`,
//! and everything else to `text` in PostgreSQL's own canonical spelling —
//! `numeric` exactly, `timestamptz` as RFC 3339 in UTC, `uuid` hyphenated,
//! `json`/`jsonb` verbatim, one-dimensional arrays as JSON. Parameters are
//! sent in text format and typed by the server, so a plugin passes
//! `"2024-05-01T10:00:00Z"` for a `timestamptz` or `"12.50"` for a `numeric`
//! without the host guessing.

use std::error::Error as StdError;
use std::fmt::Write as _;

use bytes::BytesMut;
use sluice_sdk::row::{Encoder, ValueRef};
use time::{Duration, PrimitiveDateTime};
use tokio_postgres::types::{to_sql_checked, Format, FromSql, IsNull, Kind, ToSql, Type};

use crate::datastores::SqlValue;

/// A parameter, sent as text for the server to type.
#[derive(Debug)]
pub struct TextParam<'a>(pub ValueRef<'a>);

impl ToSql for TextParam<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self.0 {
            ValueRef::Null => return Ok(IsNull::Yes),
            ValueRef::Integer(i) => write!(out, "{i}")?,
            ValueRef::Real(r) if r.is_nan() => out.extend_from_slice(b"NaN"),
            ValueRef::Real(r) if r.is_infinite() => {
                out.extend_from_slice(if r > 0.0 { b"Infinity" } else { b"-Infinity" })
            }
            ValueRef::Real(r) => write!(out, "{r:?}")?,
            ValueRef::Text(t) => out.extend_from_slice(t.as_bytes()),
            ValueRef::Blob(b) => {
                out.extend_from_slice(b"\\x");
                out.extend_from_slice(hex::encode(b).as_bytes());
            }
        }
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// Borrows an owned value as a parameter.
pub fn param(v: &SqlValue) -> TextParam<'_> {
    TextParam(match v {
        SqlValue::Null => ValueRef::Null,
        SqlValue::Integer(i) => ValueRef::Integer(*i),
        SqlValue::Real(r) => ValueRef::Real(*r),
        SqlValue::Text(t) => ValueRef::Text(t),
        SqlValue::Blob(b) => ValueRef::Blob(b),
    })
}

/// One result cell, undecoded.
pub struct RawCell<'a>(pub Option<&'a [u8]>);

impl<'a> FromSql<'a> for RawCell<'a> {
    fn from_sql(_ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(RawCell(Some(raw)))
    }

    fn from_sql_null(_ty: &Type) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(RawCell(None))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

/// Why a cell cannot be mapped.
#[derive(Debug, thiserror::Error)]
pub enum CellError {
    /// A type sluice does not map.
    #[error("type `{0}` is not mapped by sluice; cast it in the query (for example `col::text`)")]
    Unmapped(String),
    /// Bytes that do not match their type.
    #[error("malformed `{ty}` value from the server: {why}")]
    Malformed {
        /// The type.
        ty: String,
        /// What is wrong.
        why: &'static str,
    },
}

fn malformed(ty: &Type, why: &'static str) -> CellError {
    CellError::Malformed {
        ty: ty.name().to_string(),
        why,
    }
}

fn fixed<const N: usize>(ty: &Type, raw: &[u8]) -> Result<[u8; N], CellError> {
    raw.try_into().map_err(|_| malformed(ty, "wrong length"))
}

fn utf8<'a>(ty: &Type, raw: &'a [u8]) -> Result<&'a str, CellError> {
    std::str::from_utf8(raw).map_err(|_| malformed(ty, "invalid UTF-8"))
}

/// Appends one cell to `out`; `text` is scratch space for rendered values.
pub fn encode_cell(
    ty: &Type,
    raw: Option<&[u8]>,
    out: &mut Encoder,
    text: &mut String,
) -> Result<(), CellError> {
    let Some(raw) = raw else {
        out.push(ValueRef::Null);
        return Ok(());
    };
    match *ty {
        Type::BOOL => out.push(ValueRef::Integer((fixed::<1>(ty, raw)?[0] != 0) as i64)),
        Type::INT2 => out.push(ValueRef::Integer(i16::from_be_bytes(fixed(ty, raw)?) as i64)),
        Type::INT4 => out.push(ValueRef::Integer(i32::from_be_bytes(fixed(ty, raw)?) as i64)),
        Type::INT8 => out.push(ValueRef::Integer(i64::from_be_bytes(fixed(ty, raw)?))),
        Type::OID => out.push(ValueRef::Integer(u32::from_be_bytes(fixed(ty, raw)?) as i64)),
        Type::FLOAT4 => out.push(ValueRef::Real(f32::from_be_bytes(fixed(ty, raw)?) as f64)),
        Type::FLOAT8 => out.push(ValueRef::Real(f64::from_be_bytes(fixed(ty, raw)?))),
        Type::BYTEA => out.push(ValueRef::Blob(raw)),
        _ => {
            text.clear();
            match render_text(ty, raw, text)? {
                Some(borrowed) => out.push(ValueRef::Text(borrowed)),
                None => out.push(ValueRef::Text(text)),
            }
        }
    }
    Ok(())
}

/// Renders a non-numeric cell as text: borrowed from `raw` when it already
/// is text (returned), else written into `text` (returns `None`).
fn render_text<'a>(
    ty: &Type,
    raw: &'a [u8],
    text: &mut String,
) -> Result<Option<&'a str>, CellError> {
    match *ty {
        Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::UNKNOWN
        | Type::JSON
        | Type::XML
        | Type::CHAR => return utf8(ty, raw).map(Some),
        Type::JSONB => match raw.split_first() {
            Some((1, rest)) => return utf8(ty, rest).map(Some),
            _ => return Err(malformed(ty, "unknown jsonb version")),
        },
        Type::UUID => {
            let b: [u8; 16] = fixed(ty, raw)?;
            let h = hex::encode(b);
            let _ = write!(
                text,
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            );
        }
        Type::NUMERIC => numeric(ty, raw, text)?,
        Type::TIMESTAMPTZ | Type::TIMESTAMP => {
            let micros = i64::from_be_bytes(fixed(ty, raw)?);
            match micros {
                i64::MAX => text.push_str("infinity"),
                i64::MIN => text.push_str("-infinity"),
                _ => {
                    let at = epoch() + Duration::microseconds(micros);
                    let _ = write!(text, "{}T{}", at.date(), clock(at.time()));
                    if *ty == Type::TIMESTAMPTZ {
                        text.push('Z');
                    }
                }
            }
        }
        Type::DATE => {
            let days = i32::from_be_bytes(fixed(ty, raw)?);
            match days {
                i32::MAX => text.push_str("infinity"),
                i32::MIN => text.push_str("-infinity"),
                _ => {
                    let _ = write!(text, "{}", (epoch() + Duration::days(days as i64)).date());
                }
            }
        }
        Type::TIME => {
            let micros = i64::from_be_bytes(fixed(ty, raw)?);
            let t = time::Time::MIDNIGHT + Duration::microseconds(micros);
            text.push_str(&clock(t));
        }
        _ => match ty.kind() {
            Kind::Enum(_) => return utf8(ty, raw).map(Some),
            Kind::Domain(inner) => return render_text(inner, raw, text),
            Kind::Array(element) => array(ty, element, raw, text)?,
            _ if ty.name() == "citext" => return utf8(ty, raw).map(Some),
            _ => return Err(CellError::Unmapped(ty.name().to_string())),
        },
    }
    Ok(None)
}

fn epoch() -> PrimitiveDateTime {
    time::macros::datetime!(2000-01-01 0:00)
}

/// `HH:MM:SS` with a fraction only when there is one (as PostgreSQL prints).
fn clock(t: time::Time) -> String {
    let mut s = format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second());
    let micros = t.microsecond();
    if micros != 0 {
        let frac = format!("{micros:06}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s
}

/// `numeric` from its binary form: base-10000 digit groups with a weight and
/// a display scale, rendered exactly as PostgreSQL's text output.
fn numeric(ty: &Type, raw: &[u8], out: &mut String) -> Result<(), CellError> {
    let word = |i: usize| -> Result<u16, CellError> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| malformed(ty, "truncated"))
    };
    let (ndigits, weight, sign, dscale) = (
        word(0)? as usize,
        word(1)? as i16 as i64,
        word(2)?,
        word(3)? as usize,
    );
    match sign {
        0xC000 => {
            out.push_str("NaN");
            return Ok(());
        }
        0xD000 => {
            out.push_str("Infinity");
            return Ok(());
        }
        0xF000 => {
            out.push_str("-Infinity");
            return Ok(());
        }
        0x4000 => out.push('-'),
        0x0000 => {}
        _ => return Err(malformed(ty, "unknown sign")),
    }
    let digits = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<Result<Vec<_>, _>>()?;
    let group = |g: i64| -> u16 {
        if g >= 0 && (g as usize) < digits.len() {
            digits[g as usize]
        } else {
            0
        }
    };
    if weight < 0 {
        out.push('0');
    } else {
        let _ = write!(out, "{}", group(0));
        for g in 1..=weight {
            let _ = write!(out, "{:04}", group(g));
        }
    }
    if dscale > 0 {
        let mut frac = String::with_capacity(dscale + 4);
        let mut g = weight + 1;
        while frac.len() < dscale {
            let _ = write!(frac, "{:04}", group(g));
            g += 1;
        }
        frac.truncate(dscale);
        out.push('.');
        out.push_str(&frac);
    }
    if out == "-0" || (out.starts_with("-0.") && out[3..].bytes().all(|b| b == b'0')) {
        out.remove(0);
    }
    Ok(())
}

/// A one-dimensional array as JSON: numbers for numeric elements, strings
/// otherwise, `null` for NULL.
fn array(ty: &Type, element: &Type, raw: &[u8], out: &mut String) -> Result<(), CellError> {
    let int = |at: usize| -> Result<i32, CellError> {
        raw.get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| malformed(ty, "truncated"))
    };
    let ndim = int(0)?;
    if ndim == 0 {
        out.push_str("[]");
        return Ok(());
    }
    if ndim != 1 {
        return Err(CellError::Unmapped(format!(
            "{} with {ndim} dimensions",
            ty.name()
        )));
    }
    let len = int(12)?.max(0) as usize;
    let mut at = 20;
    let mut items = Vec::with_capacity(len);
    let mut text = String::new();
    for _ in 0..len {
        let n = int(at)?;
        at += 4;
        if n < 0 {
            items.push(serde_json::Value::Null);
            continue;
        }
        let cell = raw
            .get(at..at + n as usize)
            .ok_or_else(|| malformed(ty, "truncated"))?;
        at += n as usize;
        let mut scratch = Encoder::default();
        encode_cell(element, Some(cell), &mut scratch, &mut text)?;
        let encoded = scratch.finish();
        let value = match sluice_sdk::row::Decoder::new(&encoded).next_value() {
            Ok(Some(ValueRef::Integer(i))) => serde_json::Value::from(i),
            Ok(Some(ValueRef::Real(r))) => serde_json::Value::from(r),
            Ok(Some(ValueRef::Text(t))) => serde_json::Value::from(t),
            Ok(Some(ValueRef::Blob(b))) => {
                serde_json::Value::from(format!("\\x{}", hex::encode(b)))
            }
            _ => serde_json::Value::Null,
        };
        items.push(value);
    }
    out.push_str(&serde_json::Value::Array(items).to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_bytes(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_render_exactly() {
        let cases = [
            (numeric_bytes(2, 0, 0, 2, &[12, 5000]), "12.50"),
            (numeric_bytes(1, 1, 0, 0, &[1]), "10000"),
            (
                numeric_bytes(3, 1, 0x4000, 3, &[1, 2345, 6700]),
                "-12345.670",
            ),
            (numeric_bytes(1, -2, 0, 6, &[1200]), "0.000012"),
            (numeric_bytes(0, 0, 0, 2, &[]), "0.00"),
            (numeric_bytes(0, 0, 0xC000, 0, &[]), "NaN"),
        ];
        for (raw, want) in cases {
            let mut s = String::new();
            numeric(&Type::NUMERIC, &raw, &mut s).unwrap();
            assert_eq!(s, want);
        }
    }
}
