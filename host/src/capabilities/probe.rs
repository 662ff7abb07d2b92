//! `sluice:plugin/probe`: named HTTP GET health probes, the only network a
//! plugin can reach.
//!
//! Gate two: `get` first checks the name is granted to this step. Then the
//! host resolves the probe's host itself and refuses any non-loopback
//! address unless the plan allowlisted the host (a name re-pointed after
//! the plan was reviewed — DNS rebinding — is caught here), and connects
//! only to the addresses it checked. One GET, no body, no redirect
//! followed, no proxy, a fixed `User-Agent`, a timeout and a capped body.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tracing::Instrument;
use wasmtime::component::{HasData, Linker};

use crate::plan::Probe;
use crate::runtime::bindings::sluice::plugin::probe as wit;
use crate::runtime::bindings::sluice::plugin::types::{DatastoreError, Error};

/// Body bytes kept per probe: enough for any health document, small enough
/// that a chatty endpoint cannot fill the plugin's memory.
pub const MAX_PROBE_BODY: usize = 64 * 1024;

/// Probe requests one phase call may send: a plugin looping on `get` must
/// not turn a health check into load on the service it watches.
pub const MAX_PROBE_CALLS: u32 = 64;

/// The `User-Agent` every probe sends, so a service's logs show sluice.
pub const USER_AGENT: &str = concat!("sluice-probe/", env!("CARGO_PKG_VERSION"));

/// State of the `probe` capability in one store.
pub struct ProbeCapability {
    granted: BTreeMap<String, Probe>,
    /// False while previewing: the names are visible, nothing is sent.
    network: bool,
    /// The phase's deadline: no probe outlives it.
    phase_limit: Duration,
    calls: u32,
}

impl ProbeCapability {
    /// Serves exactly `granted`, each probe bounded by `phase_limit` too.
    pub fn new(granted: Vec<Probe>, phase_limit: Duration) -> Self {
        ProbeCapability {
            granted: granted.into_iter().map(|p| (p.name.clone(), p)).collect(),
            network: true,
            phase_limit,
            calls: 0,
        }
    }

    /// Shows the names of `granted` and sends nothing (for `preview`).
    pub fn names_only(granted: Vec<Probe>) -> Self {
        ProbeCapability {
            network: false,
            ..Self::new(granted, Duration::ZERO)
        }
    }

    /// Whether this grant lets a plugin probe `name`.
    pub fn allows(&self, name: &str) -> bool {
        self.granted.contains_key(name)
    }

    fn granted_list(&self) -> String {
        if self.granted.is_empty() {
            "none".to_string()
        } else {
            self.granted.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

struct ProbeData;

impl HasData for ProbeData {
    type Data<'a> = &'a mut ProbeCapability;
}

/// Adds `probe` to a linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut ProbeCapability,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, ProbeData>(linker, get)
}

impl wit::Host for ProbeCapability {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<wit::ProbeResponse, Error>> {
        if !self.allows(&name) {
            return Ok(Err(Error::AccessDenied(format!(
                "this step is not granted probe `{name}`; granted probes: {}",
                self.granted_list()
            ))));
        }
        if !self.network {
            return Ok(Err(Error::Unsupported(format!(
                "probe `{name}`: probes are not sent while a plan is previewed"
            ))));
        }
        if self.calls >= MAX_PROBE_CALLS {
            return Ok(Err(Error::AccessDenied(format!(
                "probe `{name}`: this phase already sent {MAX_PROBE_CALLS} probes, the most one phase may send"
            ))));
        }
        self.calls += 1;
        let probe = &self.granted[&name];
        let timeout = probe.timeout.min(self.phase_limit);
        let span = tracing::info_span!("probe", probe = %name, url = %probe.url);
        Ok(send(probe, timeout).instrument(span).await)
    }

    async fn granted(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.granted.keys().cloned().collect())
    }
}

fn failure(code: &str, message: String) -> Error {
    Error::Datastore(DatastoreError {
        code: code.to_string(),
        message,
    })
}

/// The addresses `probe` may connect to: its host resolved now, every
/// address loopback unless the host is allowlisted.
async fn addresses(probe: &Probe) -> Result<Vec<SocketAddr>, Error> {
    let addrs: Vec<SocketAddr> = match probe.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, probe.port)],
        Err(_) => tokio::net::lookup_host((probe.host.as_str(), probe.port))
            .await
            .map_err(|e| {
                failure(
                    "dns",
                    format!(
                        "probe `{}`: cannot resolve `{}`: {e}",
                        probe.name, probe.host
                    ),
                )
            })?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(failure(
            "dns",
            format!(
                "probe `{}`: `{}` resolves to no address",
                probe.name, probe.host
            ),
        ));
    }
    if !probe.allowlisted {
        if let Some(outside) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            return Err(Error::AccessDenied(format!(
                "probe `{}`: `{}` resolves to {}, which is not loopback, and `{}` is not in [plan] probe_hosts",
                probe.name,
                probe.host,
                outside.ip(),
                probe.authority()
            )));
        }
    }
    Ok(addrs)
}

async fn send(probe: &Probe, timeout: Duration) -> Result<wit::ProbeResponse, Error> {
    let addrs = addresses(probe).await?;
    let mut client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .timeout(timeout)
        .pool_max_idle_per_host(0);
    if probe.host.parse::<IpAddr>().is_err() {
        // Connect only to the addresses checked above, not to whatever a
        // second lookup would answer.
        client = client.resolve_to_addrs(&probe.host, &addrs);
    }
    let client = client
        .build()
        .map_err(|e| failure("http", format!("probe `{}`: {e}", probe.name)))?;
    let classify = |e: reqwest::Error| {
        let code = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect"
        } else {
            "http"
        };
        // The chain names the cause (`Connection refused`), not just "error
        // sending request".
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        // reqwest's message names the URL already.
        failure(code, message)
    };
    let started = Instant::now();
    let read = async {
        let mut response = client.get(&probe.url).send().await.map_err(classify)?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            let room = MAX_PROBE_BODY - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(wit::ProbeResponse {
            status,
            latency_ns: 0,
            body,
            truncated,
        })
    };
    // reqwest's timeout covers connect, headers and body; this one also
    // covers anything it does not.
    let mut response = match tokio::time::timeout(timeout, read).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(failure(
                "timeout",
                format!(
                    "probe `{}` ({}): no complete answer within {} ms",
                    probe.name,
                    probe.url,
                    timeout.as_millis()
                ),
            ))
        }
    };
    response.latency_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::probe::parse;
    use std::io::{Read, Write};
    use wit::Host;

    fn probe(name: &str, url: &str) -> Probe {
        parse(name, url, Some(2000), &[]).unwrap()
    }

    #[test]
    fn only_granted_names_are_allowed() {
        let cap = ProbeCapability::new(
            vec![probe("api", "http://127.0.0.1:1/health")],
            Duration::from_secs(5),
        );
        for (name, want) in [("api", true), ("API", false), ("other", false), ("", false)] {
            assert_eq!(cap.allows(name), want, "{name}");
        }
    }

    /// A one-shot HTTP/1.1 server on loopback answering `response`; returns
    /// its port and the request it received.
    fn serve_once(response: Vec<u8>) -> (u16, std::thread::JoinHandle<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            let _ = stream.write_all(&response);
            String::from_utf8_lossy(&request).into_owned()
        });
        (port, handle)
    }

    #[tokio::test]
    async fn a_get_reports_status_and_caps_the_body() {
        let body = vec![b'x'; MAX_PROBE_BODY + 10];
        let mut response = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        response.extend_from_slice(&body);
        let (port, server) = serve_once(response);
        let mut cap = ProbeCapability::new(
            vec![probe("api", &format!("http://localhost:{port}/health?x=1"))],
            Duration::from_secs(30),
        );
        let answer = cap.get("api".into()).await.unwrap().unwrap();
        assert_eq!(answer.status, 503);
        assert_eq!(answer.body.len(), MAX_PROBE_BODY);
        assert!(answer.truncated);
        assert!(answer.latency_ns > 0);
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /health?x=1 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request
                .to_ascii_lowercase()
                .contains(&format!("user-agent: {}", USER_AGENT.to_ascii_lowercase())),
            "{request}"
        );
    }

    #[tokio::test]
    async fn redirects_are_answers_not_followed() {
        let (port, server) = serve_once(
            b"HTTP/1.1 302 Found\r\nlocation: http://10.1.2.3/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                .to_vec(),
        );
        let mut cap = ProbeCapability::new(
            vec![probe("api", &format!("http://127.0.0.1:{port}/"))],
            Duration::from_secs(30),
        );
        let answer = cap.get("api".into()).await.unwrap().unwrap();
        assert_eq!(answer.status, 302);
        server.join().unwrap();
    }

    #[tokio::test]
    async fn refusals_and_failures_are_errors_a_plugin_can_read() {
        // A port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cap = ProbeCapability::new(
            vec![probe("api", &format!("http://127.0.0.1:{port}/"))],
            Duration::from_secs(30),
        );
        match cap.get("other".into()).await.unwrap() {
            Err(Error::AccessDenied(m)) => {
                assert!(
                    m.contains("probe `other`") && m.contains("granted probes: api"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        match cap.get("api".into()).await.unwrap() {
            Err(Error::Datastore(e)) => assert_eq!(e.code, "connect", "{}", e.message),
            other => panic!("{other:?}"),
        }
        let mut preview = ProbeCapability::names_only(vec![probe("api", "http://127.0.0.1:1/")]);
        assert_eq!(preview.granted().await.unwrap(), ["api"]);
        assert!(matches!(
            preview.get("api".into()).await.unwrap(),
            Err(Error::Unsupported(_))
        ));
    }

    #[tokio::test]
    async fn a_name_resolving_outside_loopback_is_refused_unless_allowlisted() {
        // `localhost` resolves (from /etc/hosts) to loopback only: allowed.
        let local = addresses(&probe("api", "http://localhost:9/"))
            .await
            .unwrap();
        assert!(
            local.iter().all(|a| a.ip().is_loopback() && a.port() == 9),
            "{local:?}"
        );
        // A host that is not loopback and not allowlisted — what a reviewed
        // name re-pointed later (DNS rebinding) looks like — is refused
        // before any connection; nothing is sent to it.
        let mut outside = probe("api", "http://localhost:9/");
        outside.host = "10.1.2.3".to_string();
        match addresses(&outside).await {
            Err(Error::AccessDenied(m)) => {
                assert!(
                    m.contains("not loopback") && m.contains("probe_hosts"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        outside.allowlisted = true;
        assert!(
            addresses(&outside).await.is_ok(),
            "allowlisted: no lookup, no refusal"
        );
    }
}
