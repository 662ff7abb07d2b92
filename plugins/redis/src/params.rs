//! The step params this plugin understands (one object for every phase).

use serde::Deserialize;
use sluice_sdk::{Error, StepContext};

/// Keys dumped or restored per host call unless `batch_keys` says otherwise.
pub const DEFAULT_BATCH_KEYS: u32 = 1000;
/// Largest `batch_keys`: the host's limit on keys per call.
pub const MAX_BATCH_KEYS: u32 = 10_000;

/// Params of a step run by the Redis plugin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Key prefixes the backup saves and the rollback restores; each must be
    /// under the step's `key_prefixes` grant (the host enforces it).
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Keys per pipelined `DUMP` / `RESTORE` call (1: one call per key).
    #[serde(default = "default_batch_keys")]
    pub batch_keys: u32,
    /// Key operations the migrate phase runs, in order.
    #[serde(default)]
    pub ops: Vec<Op>,
    /// Metrics the validate phase measures.
    #[serde(default)]
    pub metrics: Vec<MetricSpec>,
}

fn default_batch_keys() -> u32 {
    DEFAULT_BATCH_KEYS
}

/// One key operation.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Sets a string value, with a time-to-live when given.
    Set {
        /// Key.
        key: String,
        /// Value.
        value: String,
        /// Time-to-live in milliseconds.
        ttl_ms: Option<u64>,
    },
    /// Deletes a key (nothing if it does not exist).
    Delete {
        /// Key.
        key: String,
    },
    /// Renames a key (its expiry moves with it).
    Rename {
        /// Existing key.
        from: String,
        /// New name (replaced if it exists).
        to: String,
    },
    /// Copies a key with its expiry.
    Copy {
        /// Existing key.
        from: String,
        /// Copy (replaced if it exists).
        to: String,
    },
    /// Renames every key under `from` to the same suffix under `to`.
    RenamePrefix {
        /// Existing prefix.
        from: String,
        /// New prefix.
        to: String,
    },
    /// Copies every key under `from` to the same suffix under `to`.
    CopyPrefix {
        /// Existing prefix.
        from: String,
        /// New prefix.
        to: String,
    },
}

/// One metric: a name and exactly one way to measure it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    /// Name used in threshold expressions.
    pub name: String,
    /// Number of keys under this prefix.
    pub count_prefix: Option<String>,
    /// 1.0 when the key holds exactly this string value, else 0.0.
    pub expect: Option<Expect>,
    /// Remaining time-to-live of this key in ms (-1: persists, -2: missing).
    pub ttl_ms_of: Option<String>,
    /// An HTTP health probe the plan grants the step (`ok`, `status` or
    /// `latency_ms`), measured by [`sluice_sdk::probe::ProbeMetric`].
    pub probe: Option<sluice_sdk::probe::ProbeMetric>,
}

/// An expected string value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Key.
    pub key: String,
    /// Expected value.
    pub value: String,
}

impl Params {
    /// Parses and checks the step's params.
    pub fn of(ctx: &StepContext) -> Result<Self, Error> {
        let params: Params = ctx.params()?;
        let invalid = |m: String| Err(Error::InvalidParams(format!("step `{}`: {m}", ctx.step_id)));
        if !(1..=MAX_BATCH_KEYS).contains(&params.batch_keys) {
            return invalid(format!(
                "`batch_keys = {}` must be between 1 and {MAX_BATCH_KEYS}",
                params.batch_keys
            ));
        }
        if params.prefixes.iter().any(String::is_empty) {
            return invalid(
                "`prefixes` has an empty prefix, which would mean every key; name the prefixes"
                    .into(),
            );
        }
        for metric in &params.metrics {
            let ways = [
                metric.count_prefix.is_some(),
                metric.expect.is_some(),
                metric.ttl_ms_of.is_some(),
                metric.probe.is_some(),
            ];
            if ways.iter().filter(|w| **w).count() != 1 {
                return invalid(format!(
                    "metric `{}` needs exactly one of count_prefix, expect, ttl_ms_of, probe",
                    metric.name
                ));
            }
        }
        for op in &params.ops {
            if let Op::RenamePrefix { from, to } | Op::CopyPrefix { from, to } = op {
                if from.is_empty() || to.is_empty() {
                    return invalid(
                        "rename_prefix and copy_prefix need non-empty `from` and `to`".into(),
                    );
                }
                if to.starts_with(from.as_str()) || from.starts_with(to.as_str()) {
                    return invalid(format!(
                        "prefix operation from `{from}` to `{to}`: one prefix contains the other, so keys would be moved onto keys of the same operation"
                    ));
                }
            }
        }
        Ok(params)
    }

    /// The backup's prefixes; backup and rollback need at least one.
    pub fn backup_prefixes(&self, ctx: &StepContext) -> Result<&[String], Error> {
        if self.prefixes.is_empty() {
            return Err(Error::InvalidParams(format!(
                "step `{}`: `prefixes = [\"…\"]` is required: the key prefixes the backup saves",
                ctx.step_id
            )));
        }
        Ok(&self.prefixes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Params, Error> {
        Params::of(&StepContext::new("s", "t", "redis", json))
    }

    #[test]
    fn strict_params_with_clear_errors() {
        let p = parse(r#"{"prefixes":["flags:"],"ops":[{"op":"set","key":"flags:a","value":"1","ttl_ms":5},{"op":"rename_prefix","from":"a:","to":"b:"}],"metrics":[{"name":"n","count_prefix":"flags:"}]}"#).unwrap();
        assert_eq!(p.batch_keys, DEFAULT_BATCH_KEYS);
        assert_eq!(p.ops.len(), 2);
        let cases = [
            (r#"{"prefixs":["a"]}"#, "prefixs"),
            (r#"{"ops":[{"op":"move","key":"a"}]}"#, "move"),
            (r#"{"ops":[{"op":"set","key":"a"}]}"#, "value"),
            (r#"{"batch_keys":0}"#, "batch_keys"),
            (r#"{"prefixes":[""]}"#, "empty prefix"),
            (r#"{"metrics":[{"name":"m"}]}"#, "exactly one"),
            (
                r#"{"ops":[{"op":"copy_prefix","from":"a:","to":"a:b:"}]}"#,
                "contains",
            ),
        ];
        for (json, want) in cases {
            let e = parse(json).unwrap_err();
            let Error::InvalidParams(m) = &e else {
                panic!("{e:?}")
            };
            assert!(m.contains(want), "{json}: {m}");
        }
    }
}
