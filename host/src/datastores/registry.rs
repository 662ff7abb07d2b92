//! The one place that maps a plan target's kind to its driver: adding a
//! datastore is its folder and one line here.

use super::Datastore;
use crate::plan::TargetKind;

/// Every driver, one line each.
static DRIVERS: &[&dyn Datastore] = &[
    &super::sqlite::Sqlite,
    &super::postgres::Postgres,
    &super::redis::Redis,
];

/// The driver of `kind` targets.
pub fn driver(kind: TargetKind) -> &'static dyn Datastore {
    DRIVERS
        .iter()
        .copied()
        .find(|d| d.kind() == kind)
        .unwrap_or_else(|| panic!("no datastore driver is registered for {}", kind.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_exactly_one_driver() {
        for kind in [TargetKind::Sqlite, TargetKind::Postgres, TargetKind::Redis] {
            let n = DRIVERS.iter().filter(|d| d.kind() == kind).count();
            assert_eq!(n, 1, "{}", kind.as_str());
            assert_eq!(driver(kind).kind(), kind);
        }
    }
}
