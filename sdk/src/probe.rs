//! Named HTTP health probes the plan grants to the step, and the one way
//! every plugin turns a probe into a metric.
//!
//! A plugin names a probe (`api`); the plan says where it goes
//! (`[probes] api = "http://127.0.0.1:8080/health"`) and the host sends a
//! plain GET to a loopback or allowlisted host, nowhere else. In a step's
//! params a probe metric reads:
//!
//! ```toml
//! [[steps.params.metrics]]
//! name = "health"
//! probe = { name = "api", measure = "ok", expect_status = 200 }
//! ```
//!
//! `measure` is `ok` (1.0 when the status is the expected one — any 2xx
//! unless `expect_status` says — else 0.0; the default), `status` (the
//! code) or `latency_ms`. A server that cannot be reached measures `ok` =
//! 0.0, so a threshold such as `health == 1` can trip a rollback; `status`
//! and `latency_ms` have no value then, and validate fails.

use serde::Deserialize;

use crate::__private::bindings::sluice::plugin::probe as wit;
use crate::{Error, ErrorExt, Metric};

pub use wit::ProbeResponse;

/// Sends the GET of the probe named `name`. [`Error::AccessDenied`] unless
/// the step is granted it; [`Error::Datastore`] (code `dns`, `connect`,
/// `timeout` or `http`) when the server cannot be reached.
pub fn get(name: &str) -> Result<ProbeResponse, Error> {
    wit::get(name)
}

/// Names of the probes this step is granted (also during `preview`, where
/// nothing is sent).
pub fn granted() -> Vec<String> {
    wit::granted()
}

/// For `preview`: checks that every probe metric (`(metric name, spec)`)
/// names a probe the step is granted, asking the host for the grant only
/// when there is one.
pub fn check_granted<'a>(
    metrics: impl IntoIterator<Item = (&'a str, &'a ProbeMetric)>,
) -> Result<(), Error> {
    let mut granted: Option<Vec<String>> = None;
    for (metric, spec) in metrics {
        spec.check_granted(metric, granted.get_or_insert_with(self::granted))?;
    }
    Ok(())
}

/// What a probe metric reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// 1.0 when the server answered with the expected status, else 0.0
    /// (also when it cannot be reached).
    #[default]
    Ok,
    /// The HTTP status code.
    Status,
    /// Time to the end of the answer, in milliseconds.
    LatencyMs,
}

/// A metric measured by a probe: `probe = { name, measure, expect_status }`
/// in a step's metric params.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeMetric {
    /// The probe's name in the plan's `[probes]`.
    pub name: String,
    /// What the metric reports.
    #[serde(default)]
    pub measure: Measure,
    /// The status `ok` expects; any 2xx when absent.
    pub expect_status: Option<u16>,
}

impl ProbeMetric {
    /// For `preview`: refuses a probe the step is not granted, naming the
    /// metric, the probe and what is granted — a plan error before anything
    /// runs.
    pub fn check_granted(&self, metric: &str, granted: &[String]) -> Result<(), Error> {
        if granted.iter().any(|g| g == &self.name) {
            return Ok(());
        }
        Err(Error::InvalidParams(format!(
            "metric `{metric}` probes `{}`, which this step is not granted; add it to the step's `probes = [...]` (granted: {})",
            self.name,
            if granted.is_empty() {
                "none".to_string()
            } else {
                granted.join(", ")
            }
        )))
    }

    /// Whether `status` is the one `ok` expects.
    pub fn expected(&self, status: u16) -> bool {
        match self.expect_status {
            Some(want) => status == want,
            None => (200..300).contains(&status),
        }
    }

    /// Probes now and reports the metric `metric`.
    pub fn measure(&self, metric: &str) -> Result<Metric, Error> {
        let (value, detail) = self.value(get(&self.name))?;
        Ok(Metric {
            name: metric.to_string(),
            value,
            detail,
        })
    }

    /// The value and detail of an answer (or of a failure to get one).
    pub fn value(&self, answer: Result<ProbeResponse, Error>) -> Result<(f64, String), Error> {
        let response = match (answer, self.measure) {
            (Ok(response), _) => response,
            // Down is a measurement for `ok`, so a threshold can act on it.
            (Err(Error::Datastore(e)), Measure::Ok) => {
                return Ok((
                    0.0,
                    format!(
                        "probe `{}` got no answer ({}): {}",
                        self.name, e.code, e.message
                    ),
                ))
            }
            (Err(e), _) => {
                return Err(match e {
                    Error::Datastore(d) => Error::datastore(
                        d.code,
                        format!(
                            "probe `{}` has no {}: {}",
                            self.name,
                            self.measured(),
                            d.message
                        ),
                    ),
                    other => other,
                })
            }
        };
        let latency_ms = response.latency_ns as f64 / 1e6;
        let seen = format!(
            "probe `{}`: status {} in {latency_ms:.1} ms",
            self.name, response.status
        );
        Ok(match self.measure {
            Measure::Ok => {
                let ok = self.expected(response.status);
                let want = match self.expect_status {
                    Some(s) => format!("expected {s}"),
                    None => "expected 2xx".to_string(),
                };
                (if ok { 1.0 } else { 0.0 }, format!("{seen} ({want})"))
            }
            Measure::Status => (f64::from(response.status), seen),
            Measure::LatencyMs => (latency_ms, seen),
        })
    }

    fn measured(&self) -> &'static str {
        match self.measure {
            Measure::Ok => "ok",
            Measure::Status => "status",
            Measure::LatencyMs => "latency",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DatastoreError;

    fn spec(json: &str) -> ProbeMetric {
        serde_json::from_str(json).unwrap()
    }

    fn answer(status: u16, ms: u64) -> Result<ProbeResponse, Error> {
        Ok(ProbeResponse {
            status,
            latency_ns: ms * 1_000_000,
            body: Vec::new(),
            truncated: false,
        })
    }

    fn down() -> Result<ProbeResponse, Error> {
        Err(Error::Datastore(DatastoreError {
            code: "connect".into(),
            message: "Connection refused".into(),
        }))
    }

    #[test]
    fn ok_is_one_for_the_expected_status_and_zero_otherwise() {
        let any = spec(r#"{"name":"api"}"#);
        assert_eq!(any.measure, Measure::Ok);
        assert_eq!(any.value(answer(200, 3)).unwrap().0, 1.0);
        assert_eq!(any.value(answer(204, 3)).unwrap().0, 1.0);
        assert_eq!(any.value(answer(302, 3)).unwrap().0, 0.0);
        assert_eq!(any.value(answer(500, 3)).unwrap().0, 0.0);
        let exact = spec(r#"{"name":"api","measure":"ok","expect_status":204}"#);
        assert_eq!(exact.value(answer(200, 3)).unwrap().0, 0.0);
        let (v, detail) = exact.value(answer(204, 3)).unwrap();
        assert_eq!(v, 1.0);
        assert!(detail.contains("status 204 in 3.0 ms"), "{detail}");
    }

    #[test]
    fn a_server_that_is_down_measures_ok_zero_but_has_no_status() {
        let (v, detail) = spec(r#"{"name":"api"}"#).value(down()).unwrap();
        assert_eq!(v, 0.0);
        assert!(detail.contains("Connection refused"), "{detail}");
        for measure in ["status", "latency_ms"] {
            let s = spec(&format!(r#"{{"name":"api","measure":"{measure}"}}"#));
            assert!(
                matches!(s.value(down()), Err(Error::Datastore(_))),
                "{measure}"
            );
        }
        // A refusal is not "down": it is an error whatever is measured.
        let denied = Err(Error::AccessDenied("not granted".into()));
        assert!(spec(r#"{"name":"api"}"#).value(denied).is_err());
    }

    #[test]
    fn status_and_latency_report_what_was_seen() {
        let s = spec(r#"{"name":"api","measure":"status"}"#);
        assert_eq!(s.value(answer(503, 7)).unwrap().0, 503.0);
        let l = spec(r#"{"name":"api","measure":"latency_ms"}"#);
        assert_eq!(l.value(answer(200, 7)).unwrap().0, 7.0);
    }

    #[test]
    fn specs_are_strict_and_grants_checked() {
        assert!(serde_json::from_str::<ProbeMetric>(r#"{"name":"api","url":"http://x"}"#).is_err());
        assert!(serde_json::from_str::<ProbeMetric>(r#"{"name":"api","measure":"body"}"#).is_err());
        let s = spec(r#"{"name":"api"}"#);
        assert!(s.check_granted("health", &["api".into()]).is_ok());
        match s.check_granted("health", &["db".into()]) {
            Err(Error::InvalidParams(m)) => {
                assert!(
                    m.contains("`health` probes `api`") && m.contains("granted: db"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
