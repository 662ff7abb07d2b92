//! Named HTTP health probes (`[probes]`) and the hosts they may reach.
//!
//! A probe is a plain `http://` URL the plan names; a step is granted probes
//! by name and its plugin never sees a URL. At load, a probe's host must be
//! loopback (127.0.0.0/8, `::1`, `localhost`) unless its `host:port` is
//! listed in `[plan] probe_hosts`; the capability checks again at call time
//! against what the name resolves to (`capabilities/probe.rs`).

use std::net::IpAddr;
use std::time::Duration;

/// How long a probe may take unless its `timeout_ms` says otherwise (the
/// phase's own deadline caps it either way).
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A named GET probe, checked at plan load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Name in `[probes]`, the one a plugin asks for.
    pub name: String,
    /// The URL, normalized (`http://host:port/path?query`, no credentials,
    /// no fragment).
    pub url: String,
    /// Host as resolved at call time (an IP literal without brackets, or a
    /// name).
    pub host: String,
    /// TCP port (80 when the URL names none).
    pub port: u16,
    /// Time one probe may take, before the phase's deadline caps it.
    pub timeout: Duration,
    /// `host:port` is listed in `[plan] probe_hosts`: it may resolve to a
    /// non-loopback address. Otherwise every address must be loopback.
    pub allowlisted: bool,
}

impl Probe {
    /// `host:port` as written in `probe_hosts` (IPv6 in brackets).
    pub fn authority(&self) -> String {
        authority(&self.host, self.port)
    }

    /// Whether the probe can leave this machine: its host is allowlisted
    /// and is not a loopback address literal.
    pub fn leaves_loopback(&self) -> bool {
        self.allowlisted && !self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// How a reviewer reads the grant (`audit`, the lock file).
    pub fn describe(&self) -> String {
        let mut out = format!("GET {} (timeout {} ms", self.url, self.timeout.as_millis());
        if self.leaves_loopback() {
            out.push_str(", allowlisted host");
        }
        out.push(')');
        out
    }
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Why a probe or a `probe_hosts` entry is refused; the plan loader adds
/// the location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// Not a URL at all.
    #[error("probe `{name}`: `{url}` is not a URL: {reason}")]
    NotAUrl {
        /// Probe name.
        name: String,
        /// As written.
        url: String,
        /// The parser's reason.
        reason: String,
    },
    /// `https://`: no TLS stack is linked for probes.
    #[error(
        "probe `{name}`: https is not supported yet (sluice links no TLS stack for probes); \
         use an http:// URL on loopback or on a host listed in [plan] probe_hosts"
    )]
    Https {
        /// Probe name.
        name: String,
    },
    /// Any other scheme.
    #[error("probe `{name}`: scheme `{scheme}` is not supported; a probe is an http:// URL")]
    Scheme {
        /// Probe name.
        name: String,
        /// The scheme.
        scheme: String,
    },
    /// User name or password in the URL: they would end up in the lock
    /// file, the audit and the journal.
    #[error("probe `{name}`: a probe URL cannot carry credentials (`user:password@`)")]
    Credentials {
        /// Probe name.
        name: String,
    },
    /// The host is not loopback and not allowlisted.
    #[error(
        "probe `{name}`: host `{authority}` is not loopback (127.0.0.0/8, ::1, localhost); \
         a probe reaches another host only if the plan lists it: [plan] probe_hosts = [\"{authority}\"]"
    )]
    NotLoopback {
        /// Probe name.
        name: String,
        /// `host:port`.
        authority: String,
    },
    /// `timeout_ms = 0`.
    #[error("probe `{name}`: timeout_ms must be greater than 0")]
    ZeroTimeout {
        /// Probe name.
        name: String,
    },
    /// A `probe_hosts` entry that is not `host:port`.
    #[error(
        "probe_hosts entry `{entry}` is not `host:port` (for example \"health.internal:8080\")"
    )]
    BadHost {
        /// As written.
        entry: String,
    },
}

/// Normalizes a `probe_hosts` entry to `host:port` (host lowercased, IPv6 in
/// brackets).
pub fn parse_host(entry: &str) -> Result<String, ProbeError> {
    let bad = || ProbeError::BadHost {
        entry: entry.to_string(),
    };
    let (_, port) = entry.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let url = url::Url::parse(&format!("http://{entry}/")).map_err(|_| bad())?;
    if url.path() != "/" || !url.username().is_empty() || url.password().is_some() {
        return Err(bad());
    }
    let host = host_of(&url).ok_or_else(bad)?;
    Ok(authority(&host, port))
}

/// Checks one `[probes]` entry against the allowlist (normalized by
/// [`parse_host`]).
pub fn parse(
    name: &str,
    url: &str,
    timeout_ms: Option<u64>,
    allowlist: &[String],
) -> Result<Probe, ProbeError> {
    let parsed = url::Url::parse(url).map_err(|e| ProbeError::NotAUrl {
        name: name.to_string(),
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    match parsed.scheme() {
        "http" => {}
        "https" => {
            return Err(ProbeError::Https {
                name: name.to_string(),
            })
        }
        other => {
            return Err(ProbeError::Scheme {
                name: name.to_string(),
                scheme: other.to_string(),
            })
        }
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ProbeError::Credentials {
            name: name.to_string(),
        });
    }
    let host = host_of(&parsed).ok_or_else(|| ProbeError::NotAUrl {
        name: name.to_string(),
        url: url.to_string(),
        reason: "it names no host".to_string(),
    })?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let allowlisted = allowlist.contains(&authority(&host, port));
    if !allowlisted && !is_loopback_host(&host) {
        return Err(ProbeError::NotLoopback {
            name: name.to_string(),
            authority: authority(&host, port),
        });
    }
    if timeout_ms == Some(0) {
        return Err(ProbeError::ZeroTimeout {
            name: name.to_string(),
        });
    }
    let mut normalized = parsed;
    normalized.set_fragment(None);
    Ok(Probe {
        name: name.to_string(),
        url: normalized.to_string(),
        host,
        port,
        timeout: timeout_ms.map_or(DEFAULT_PROBE_TIMEOUT, Duration::from_millis),
        allowlisted,
    })
}

/// The URL's host as a resolver takes it: IPv6 without brackets, names
/// lowercased (the URL parser does that).
fn host_of(url: &url::Url) -> Option<String> {
    Some(match url.host()? {
        url::Host::Domain(d) => d.trim_end_matches('.').to_string(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => ip.to_string(),
    })
}

/// Loopback as the plan sees it: 127.0.0.0/8, `::1`, or the name `localhost`
/// (whose addresses the capability checks again when it connects).
pub fn is_loopback_host(host: &str) -> bool {
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_load_and_others_need_the_allowlist() {
        let allow = vec![parse_host("Health.Internal:8080").unwrap()];
        assert_eq!(allow, ["health.internal:8080"]);
        for (url, ok) in [
            ("http://127.0.0.1:8080/health", true),
            ("http://127.9.9.9/health", true),
            ("http://[::1]:9000/", true),
            ("http://localhost:8080/health", true),
            ("http://LOCALHOST/", true),
            ("http://health.internal:8080/ready", true),
            ("http://health.internal:8081/ready", false),
            ("http://health.internal/ready", false),
            ("http://10.1.2.3/health", false),
            ("http://169.254.169.254/latest/meta-data", false),
            ("http://localhost.evil.example/", false),
            ("http://0.0.0.0:8080/", false),
        ] {
            assert_eq!(parse("p", url, None, &allow).is_ok(), ok, "{url}");
        }
    }

    #[test]
    fn refusals_say_why() {
        let err = |url: &str| parse("api", url, None, &[]).unwrap_err();
        assert!(matches!(
            err("https://127.0.0.1/"),
            ProbeError::Https { .. }
        ));
        assert!(matches!(err("ftp://127.0.0.1/"), ProbeError::Scheme { .. }));
        assert!(matches!(
            err("http://u:p@127.0.0.1/"),
            ProbeError::Credentials { .. }
        ));
        assert!(matches!(err("not a url"), ProbeError::NotAUrl { .. }));
        let message = err("http://10.1.2.3/health").to_string();
        assert!(
            message.contains("probe_hosts = [\"10.1.2.3:80\"]"),
            "{message}"
        );
        assert!(matches!(
            parse("api", "http://127.0.0.1/", Some(0), &[]),
            Err(ProbeError::ZeroTimeout { .. })
        ));
    }

    #[test]
    fn probes_are_normalized_with_their_timeout() {
        let p = parse(
            "api",
            "http://127.0.0.1:8080/health?deep=1#x",
            Some(250),
            &[],
        )
        .unwrap();
        assert_eq!(p.url, "http://127.0.0.1:8080/health?deep=1");
        assert_eq!((p.host.as_str(), p.port), ("127.0.0.1", 8080));
        assert_eq!(p.timeout, Duration::from_millis(250));
        assert!(!p.leaves_loopback());
        let p = parse("v6", "http://[::1]/", None, &[]).unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 80));
        assert_eq!(p.authority(), "[::1]:80");
        assert_eq!(p.timeout, DEFAULT_PROBE_TIMEOUT);
        let allow = vec![parse_host("health.internal:8080").unwrap()];
        let p = parse("far", "http://health.internal:8080/", None, &allow).unwrap();
        assert!(p.leaves_loopback());
        assert!(
            p.describe().contains("allowlisted host"),
            "{}",
            p.describe()
        );
    }

    #[test]
    fn probe_hosts_entries_are_host_and_port() {
        for (entry, ok) in [
            ("health.internal:8080", true),
            ("10.0.0.5:80", true),
            ("[::1]:9000", true),
            ("health.internal", false),
            ("health.internal:http", false),
            ("health.internal:8080/path", false),
            (":8080", false),
        ] {
            assert_eq!(parse_host(entry).is_ok(), ok, "{entry}");
        }
    }
}
