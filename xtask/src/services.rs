//! PostgreSQL and Redis for the tests and benchmarks: private instances on
//! 127.0.0.1, started by the project itself so `cargo xtask test` works on a
//! fresh Debian machine where nothing is installed or running.
//!
//! Missing servers are installed from Debian's packages (`postgresql`,
//! `redis-server`). Each start gets its own directory under the system temp
//! dir (`/tmp/sluice-services-<pid>`, not `target/`, because PostgreSQL runs
//! as the unprivileged `postgres` user, which must be able to reach it), with
//! the PostgreSQL cluster, its socket and Redis's working dir inside. Ports
//! are free ones the kernel picks. [`Services`] stops both servers and
//! removes the directory when dropped.
//!
//! A Ctrl-C or a SIGKILL ends xtask without running destructors, and std has
//! no signal handler without `unsafe`. So a reaper — this binary again, as
//! `xtask services-reaper`, in its own process group so Ctrl-C does not reach
//! it — blocks reading a pipe whose write end only xtask holds. The kernel
//! closes that pipe however xtask ends; the reaper then does the same
//! cleanup. On an orderly drop xtask kills the reaper and cleans up itself.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a server may take to answer after it was started. Generous: CI
/// machines build two things at once while this runs.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// `apt-get install` of both packages on a slow mirror.
const APT_INSTALL_TIMEOUT: Duration = Duration::from_secs(900);
/// `apt-get update` before the one retry.
const APT_UPDATE_TIMEOUT: Duration = Duration::from_secs(300);
/// `initdb` of an empty cluster without fsync.
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
/// `pg_ctl stop`; its own `-t` is half of this.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Another process may take a free port between our probe and the server's
/// bind; a new port is tried this many times in all.
const PORT_ATTEMPTS: usize = 3;
/// The superuser `initdb -U` creates; tests connect as it with trust auth.
const PG_USER: &str = "sluice";
/// The unprivileged account PostgreSQL runs as when xtask runs as root
/// (PostgreSQL refuses root). Debian's `postgresql` package creates it.
const PG_OS_USER: &str = "postgres";

/// Running PostgreSQL and Redis; both stopped, and their directory removed,
/// when dropped.
pub struct Services {
    dir: PathBuf,
    pg_bin: PathBuf,
    /// Cleans up if xtask dies; killed on an orderly drop.
    reaper: Option<Child>,
    redis: Option<Child>,
    pg_port: Option<u16>,
    redis_port: Option<u16>,
}

impl Services {
    /// `postgres://sluice@127.0.0.1:<port>/postgres`.
    pub fn pg_url(&self) -> String {
        format!(
            "postgres://{PG_USER}@127.0.0.1:{}/postgres",
            self.pg_port.expect("PostgreSQL started")
        )
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn redis_url(&self) -> String {
        format!(
            "redis://127.0.0.1:{}",
            self.redis_port.expect("Redis started")
        )
    }

    /// The variables tests and benchmarks read the URLs from.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            ("SLUICE_TEST_PG_URL", self.pg_url()),
            ("SLUICE_TEST_REDIS_URL", self.redis_url()),
        ]
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        // The reaper would clean up a second time once its pipe closes.
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
        if let Some(mut redis) = self.redis.take() {
            let _ = redis.kill();
            let _ = redis.wait();
        }
        for problem in cleanup(&self.dir, &self.pg_bin) {
            eprintln!("xtask: warning: {problem}");
        }
    }
}

/// Installs what is missing, then starts private PostgreSQL and Redis
/// instances and waits until both answer.
pub fn start() -> Result<Services> {
    let (pg_bin, redis_server) = ensure_installed()?;
    let dir = std::env::temp_dir().join(format!("sluice-services-{}", std::process::id()));
    if dir.exists() {
        // Left by an earlier process that had our pid and was SIGKILLed
        // together with its reaper.
        for problem in cleanup(&dir, &pg_bin) {
            eprintln!("xtask: warning: {problem}");
        }
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    // From here on, dropping `services` (also through `?`) stops what was
    // started and removes the directory.
    let mut services = Services {
        dir,
        pg_bin,
        reaper: None,
        redis: None,
        pg_port: None,
        redis_port: None,
    };
    services.reaper = Some(spawn_reaper(&services.dir, &services.pg_bin)?);
    if is_root() {
        let (uid, gid) = os_user_ids(PG_OS_USER)?;
        std::os::unix::fs::chown(&services.dir, Some(uid), Some(gid))
            .with_context(|| format!("giving {} to {PG_OS_USER}", services.dir.display()))?;
        // Every parent must be searchable by `postgres` too (a TMPDIR under
        // /root is not); say so plainly instead of through initdb's errors.
        let reachable = Command::new("runuser")
            .args(["-u", PG_OS_USER, "--", "test", "-w"])
            .arg(&services.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !reachable {
            bail!(
                "PostgreSQL runs as `{PG_OS_USER}`, which cannot reach {}: point TMPDIR at a \
                 directory every user can traverse, such as /tmp",
                services.dir.display()
            );
        }
    }
    services.pg_port = Some(start_postgres(&services.dir, &services.pg_bin)?);
    let (redis, port) = start_redis(&services.dir, &redis_server)?;
    services.redis = Some(redis);
    services.redis_port = Some(port);
    eprintln!(
        "xtask: services in {}: PostgreSQL {} · Redis {}",
        services.dir.display(),
        services.pg_url(),
        services.redis_url()
    );
    Ok(services)
}

/// `cargo xtask services`: starts both, prints `export` lines for a shell,
/// and stops them on Ctrl-C or at the end of standard input.
pub fn serve() -> Result<()> {
    let services = start()?;
    for (name, value) in services.env() {
        println!("export {name}={value}");
    }
    eprintln!("xtask: services running; Ctrl-C or end of input (Ctrl-D) stops them");
    // Blocks until EOF; Ctrl-C kills us here and the reaper cleans up.
    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
    drop(services);
    eprintln!("xtask: services stopped");
    Ok(())
}

/// `xtask services-reaper <dir> <pg-bin>` (internal): waits for its standard
/// input to close, which happens when the xtask that started it ends, then
/// stops whatever is still running in `<dir>` and removes it.
pub fn reap(args: &[String]) -> Result<()> {
    let [dir, pg_bin] = args else {
        bail!("usage: xtask services-reaper <dir> <postgresql-bin-dir>");
    };
    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
    let dir = Path::new(dir);
    if dir.exists() {
        let problems = cleanup(dir, Path::new(pg_bin));
        // The terminal may be gone; a failed write must not panic.
        let mut err = std::io::stderr();
        for problem in &problems {
            let _ = writeln!(err, "xtask: warning: {problem}");
        }
        let _ = writeln!(err, "xtask: stopped the test services in {}", dir.display());
    }
    Ok(())
}

fn spawn_reaper(dir: &Path, pg_bin: &Path) -> Result<Child> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    Command::new(&exe)
        .arg("services-reaper")
        .arg(dir)
        .arg(pg_bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {} services-reaper", exe.display()))
}

/// Stops PostgreSQL and Redis if they still run in `dir`, and removes it.
/// Returns what went wrong, for the caller to print: it runs in destructors
/// and in the reaper, where there is nobody to return an error to.
fn cleanup(dir: &Path, pg_bin: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let data = dir.join("pg");
    if data.join("postmaster.pid").exists() {
        let stop = |mode: &str| {
            let mut cmd = as_pg_os_user(&pg_bin.join("pg_ctl"));
            cmd.arg("stop")
                .arg("-D")
                .arg(&data)
                .args(["-m", mode, "-w", "-t"])
                .arg((STOP_TIMEOUT.as_secs() / 2).to_string())
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            run_bounded(&mut cmd, STOP_TIMEOUT)
        };
        if let Err(fast) = stop("fast") {
            if let Err(immediate) = stop("immediate") {
                problems.push(format!(
                    "PostgreSQL in {} did not stop: {fast:#}; {immediate:#}",
                    data.display()
                ));
            }
        }
    }
    if let Some(pid) = fs::read_to_string(dir.join("redis.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    {
        // Only if that pid is still our Redis: it may have been reused.
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("redis-server") {
            let killed = Command::new("sh")
                .arg("-c")
                .arg(format!("kill -9 {pid}"))
                .status();
            if !killed.is_ok_and(|s| s.success()) {
                problems.push(format!("could not kill Redis (pid {pid})"));
            }
        }
    }
    if let Err(e) = fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            problems.push(format!("removing {}: {e}", dir.display()));
        }
    }
    problems
}

// ---- installing -----------------------------------------------------------

/// Finds the servers, installing the Debian packages that provide what is
/// missing. Returns PostgreSQL's bin dir and the `redis-server` path.
fn ensure_installed() -> Result<(PathBuf, PathBuf)> {
    let mut missing = Vec::new();
    if pg_bin_dir().is_none() {
        missing.push("postgresql");
    }
    if redis_server().is_none() {
        missing.push("redis-server");
    }
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    let pg_bin = pg_bin_dir().context(
        "the Debian package `postgresql` is installed but /usr/lib/postgresql/<version>/bin \
         lacks postgres, initdb, pg_ctl or pg_isready",
    )?;
    let redis = redis_server().context(
        "the Debian package `redis-server` is installed but `redis-server` is not found",
    )?;
    Ok((pg_bin, redis))
}

/// The highest /usr/lib/postgresql/<version>/bin that has every program we
/// run.
fn pg_bin_dir() -> Option<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(root)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| {
            ["postgres", "initdb", "pg_ctl", "pg_isready"]
                .iter()
                .all(|p| bin.join(p).is_file())
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn redis_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
}

/// Installs Debian packages with `apt-get` (as root; otherwise says what to
/// install), running `apt-get update` once if the first attempt fails.
pub(crate) fn apt_install(packages: &[&str]) -> Result<()> {
    let list = packages.join(" ");
    if !is_root() {
        bail!(
            "the tests need the Debian package(s) {list}, which are not installed, and xtask is \
             not root: run `apt-get install -y {list}` as root, then again"
        );
    }
    let install = || {
        eprintln!("xtask: $ apt-get install -y {list}");
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        run_bounded(&mut cmd, APT_INSTALL_TIMEOUT)
    };
    if install().is_ok() {
        return Ok(());
    }
    // A fresh machine has no package lists yet, or stale ones.
    eprintln!("xtask: $ apt-get update");
    run_bounded(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null()),
        APT_UPDATE_TIMEOUT,
    )
    .context("apt-get update")?;
    install().with_context(|| {
        format!("installing the Debian package(s) {list} that the tests need (see apt-get's output above)")
    })
}

// ---- PostgreSQL -----------------------------------------------------------

/// Creates a cluster in `<dir>/pg` and starts it; returns its port.
fn start_postgres(dir: &Path, bin: &Path) -> Result<u16> {
    let data = dir.join("pg");
    let initdb_log = dir.join("initdb.log");
    let mut initdb = as_pg_os_user(&bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            PG_USER,
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        ])
        .current_dir(dir);
    run_logged(&mut initdb, &initdb_log, INITDB_TIMEOUT).context("initdb")?;

    let socket_dir = dir.display().to_string().replace('\'', "''");
    let settings = format!(
        "\n# Added by `cargo xtask`: a private, throwaway instance for tests.\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = '{socket_dir}'\n\
         max_connections = 300\n\
         # Tests kill processes, not machines.\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n"
    );
    fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .and_then(|mut f| f.write_all(settings.as_bytes()))
        .context("writing postgresql.conf")?;

    let server_log = dir.join("postgres.log");
    let ctl_log = dir.join("pg_ctl.log");
    for attempt in 1..=PORT_ATTEMPTS {
        let port = free_port()?;
        // `pg_ctl -l` appends; a failed attempt's bind error must not linger.
        let _ = fs::remove_file(&server_log);
        let mut start = as_pg_os_user(&bin.join("pg_ctl"));
        start
            .arg("start")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&server_log)
            .args(["-w", "-t"])
            .arg(READY_TIMEOUT.as_secs().to_string())
            .arg("-o")
            .arg(format!("-p {port}"))
            .current_dir(dir);
        let started = run_logged(
            &mut start,
            &ctl_log,
            READY_TIMEOUT + Duration::from_secs(30),
        );
        let log = fs::read_to_string(&server_log).unwrap_or_default();
        match started {
            Ok(()) => {
                if let Err(e) = wait_pg_ready(bin, port) {
                    bail!("{e:#}\n{}", tail(&server_log));
                }
                return Ok(port);
            }
            Err(_) if attempt < PORT_ATTEMPTS && log.contains("Address already in use") => {
                eprintln!("xtask: port {port} was taken; PostgreSQL tries another");
            }
            Err(e) => bail!("starting PostgreSQL: {e:#}\n{}", tail(&server_log)),
        }
    }
    unreachable!("the last attempt returns")
}

/// Waits until `pg_isready` accepts the server on `port`.
fn wait_pg_ready(bin: &Path, port: u16) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-U", PG_USER, "-d", "postgres", "-t", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running pg_isready")?;
        if ready.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "PostgreSQL on 127.0.0.1:{port} did not accept connections within {}s",
                READY_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A command that runs a PostgreSQL program as `postgres` when we are root.
fn as_pg_os_user(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", PG_OS_USER, "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

// ---- Redis ----------------------------------------------------------------

/// Starts `redis-server` on a free port; returns the child and its port.
fn start_redis(dir: &Path, redis_server: &Path) -> Result<(Child, u16)> {
    let log = dir.join("redis.log");
    for attempt in 1..=PORT_ATTEMPTS {
        let port = free_port()?;
        let _ = fs::remove_file(&log);
        let mut child = Command::new(redis_server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--databases", "1024"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Ctrl-C goes to xtask alone; the reaper then stops Redis.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", redis_server.display()))?;
        // Read by the reaper.
        fs::write(dir.join("redis.pid"), child.id().to_string())?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                let text = fs::read_to_string(&log).unwrap_or_default();
                if attempt < PORT_ATTEMPTS && text.contains("Address already in use") {
                    eprintln!("xtask: port {port} was taken; Redis tries another");
                    break;
                }
                bail!("redis-server exited with {status}\n{}", tail(&log));
            }
            if redis_pings(port) {
                return Ok((child, port));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "Redis on 127.0.0.1:{port} did not answer PING within {}s\n{}",
                    READY_TIMEOUT.as_secs(),
                    tail(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    unreachable!("the last attempt returns")
}

/// True once Redis answers `PING` with `+PONG` (not `-LOADING`).
fn redis_pings(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 16];
    let n = stream.read(&mut reply).unwrap_or(0);
    reply[..n].starts_with(b"+PONG")
}

// ---- small pieces ---------------------------------------------------------

/// A port nothing listens on right now.
fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

fn is_root() -> bool {
    // The owner of /proc/self is our effective uid; std has no getuid.
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Numeric uid and gid of an OS account.
fn os_user_ids(user: &str) -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id").args([flag, user]).output()?;
        if !out.status.success() {
            bail!(
                "PostgreSQL refuses to run as root and there is no `{user}` account to run it \
                 as (Debian's `postgresql` package creates it): `useradd --system {user}`"
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

/// Runs a command to completion, killing it after `timeout`.
fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<()> {
    let line = format!("{cmd:?}").replace('"', "");
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {line}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                return Ok(());
            }
            bail!("{line} failed with {status}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{line} did not finish within {}s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// [`run_bounded`] with output into `log`, whose tail a failure shows.
fn run_logged(cmd: &mut Command, log: &Path, timeout: Duration) -> Result<()> {
    let file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    match run_bounded(cmd, timeout) {
        Ok(()) => Ok(()),
        Err(e) => bail!("{e:#}\n{}", tail(log)),
    }
}

/// The last lines of a log, for an error message.
fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(20);
    format!(
        "last lines of {}:\n{}",
        log.display(),
        lines[start..].join("\n")
    )
}
