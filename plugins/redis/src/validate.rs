//! Validate: named metrics, read-only.

use sluice_sdk::kv::Connection;
use sluice_sdk::{Error, Metric, StepContext};

use crate::{Params, RedisPlugin};

impl sluice_sdk::Validate for RedisPlugin {
    fn validate(ctx: &StepContext) -> Result<Vec<Metric>, Error> {
        let params = Params::of(ctx)?;
        if params.metrics.is_empty() {
            return Ok(Vec::new());
        }
        let conn = Connection::open(&ctx.target)?;
        let mut out = Vec::new();
        for m in params.metrics.iter().filter(|m| ctx.wants_metric(&m.name)) {
            if let Some(probe) = &m.probe {
                out.push(probe.measure(&m.name)?);
                continue;
            }
            let (value, detail) = if let Some(prefix) = &m.count_prefix {
                let n = conn.scan_prefix(prefix)?.len();
                (n as f64, format!("keys under `{prefix}`"))
            } else if let Some(expect) = &m.expect {
                let found = conn.get(&expect.key)?;
                let equal = found.as_deref() == Some(expect.value.as_bytes());
                (
                    if equal { 1.0 } else { 0.0 },
                    format!("`{}` equals {:?}", expect.key, expect.value),
                )
            } else if let Some(key) = &m.ttl_ms_of {
                let ttl = match conn.ttl_ms(key)? {
                    Some(ms) => ms as f64,
                    None if conn.exists(std::slice::from_ref(key))? == [true] => -1.0,
                    None => -2.0,
                };
                (
                    ttl,
                    format!("time-to-live of `{key}` in ms (-1: persists, -2: missing)"),
                )
            } else {
                unreachable!("Params::of checks each metric has one way to measure it")
            };
            out.push(Metric {
                name: m.name.clone(),
                value,
                detail,
            });
        }
        Ok(out)
    }
}
