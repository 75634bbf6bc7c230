//! What every scenario shares: processes we start (pinned to the server core and stopped by
//! pid), the HTTP load generator that checks every answer, CPU and memory readings from
//! `/proc`, the GraphQL calls used for seeding, and the one line each result prints.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper::header::HeaderValue;
use serde_json::{Value, json};

/// The master secret of every API the bench starts.
pub const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";

/// A process we started, stopped by its pid when dropped.
pub struct Server {
    pub(crate) child: Child,
    pub(crate) dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A free loopback port.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `program` pinned to core 0 (the server core).
pub fn spawn_pinned(program: &Path, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<Child> {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c")
        .arg("0")
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn()
        .with_context(|| format!("starting {} (is taskset installed?)", program.display()))
}

/// CPU seconds the processes `pids` have used (user + system), from /proc.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    let one = |pid: &u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
        let ticks: f64 = fields
            .get(11..13)
            .map_or(0.0, |f| f.iter().filter_map(|t| t.parse::<f64>().ok()).sum());
        ticks / 100.0
    };
    pids.iter().map(one).sum()
}

/// Peak resident memory of a process in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The n-th request of a load: its body and its bearer token.
pub type NthRequest = Arc<dyn Fn(u64) -> (Bytes, Option<HeaderValue>) + Send + Sync>;

/// One request shape the load generator sends, and how to check each answer.
#[derive(Clone)]
pub struct Load {
    pub port: u16,
    pub path: &'static str,
    pub request: NthRequest,
    pub check: fn(&Value) -> bool,
}

/// Numbers requests across every load driven in this process (unique idempotency keys, and a
/// fleet's devices taken in turn).
static NEXT_REQUEST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Requests taken in turn from `requests` (a fleet's devices, each within its own budget).
pub fn rotating(requests: Vec<(Bytes, Option<HeaderValue>)>) -> NthRequest {
    let requests = Arc::new(requests);
    Arc::new(move |n| {
        let index = usize::try_from(n).unwrap_or(0) % requests.len().max(1);
        requests.get(index).cloned().unwrap_or_default()
    })
}

/// A GraphQL request body.
pub fn graphql_body(query: &str, variables: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(&json!({ "query": query, "variables": variables })).unwrap_or_default())
}

/// `Bearer <token>` as a header value.
pub fn bearer(token: &str) -> anyhow::Result<HeaderValue> {
    Ok(HeaderValue::from_str(&format!("Bearer {token}"))?)
}

/// Sends `load` over `connections` keep-alive connections for `duration`; returns
/// (checked responses per second, failures).
pub async fn drive(load: &Load, connections: usize, duration: Duration) -> anyhow::Result<(f64, u64)> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", load.port)).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let (mut ok, mut failed) = (0u64, 0u64);
            while Instant::now() < deadline {
                let n = NEXT_REQUEST.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (body, token) = (load.request)(n);
                let mut req = Request::post(load.path)
                    .header("host", "127.0.0.1")
                    .header("content-type", "application/json");
                if let Some(token) = token {
                    req = req.header("authorization", token);
                }
                let res = sender.send_request(req.body(Full::new(body))?).await?;
                let status = res.status();
                let body = res.into_body().collect().await?.to_bytes();
                let good =
                    status.is_success() && serde_json::from_slice::<Value>(&body).is_ok_and(|v| (load.check)(&v));
                if good {
                    ok += 1;
                } else {
                    if failed == 0 {
                        eprintln!("a failed answer ({status}): {}", String::from_utf8_lossy(&body));
                    }
                    failed += 1;
                }
            }
            anyhow::Ok((ok, failed))
        }));
    }
    let (mut ok, mut failed) = (0u64, 0u64);
    for task in tasks {
        let (o, f) = task.await??;
        ok += o;
        failed += f;
    }
    Ok((ok as f64 / started.elapsed().as_secs_f64(), failed))
}

/// Drives `load` once and also says how busy the server processes `pids` were meanwhile, as
/// a fraction of one core: (rate, busy).
pub async fn drive_measured(
    load: &Load,
    pids: &[u32],
    connections: usize,
    duration: Duration,
) -> anyhow::Result<(f64, f64)> {
    let cpu = cpu_seconds(pids);
    let started = Instant::now();
    let (rate, failed) = drive(load, connections, duration).await?;
    if failed > 0 {
        bail!("{failed} responses to {} failed their check", load.path);
    }
    Ok((rate, (cpu_seconds(pids) - cpu) / started.elapsed().as_secs_f64()))
}

/// The median (the upper one of an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The smallest value, as a percentage (how busy a core was at the least).
pub fn least_percent(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min) * 100.0
}

/// A GraphQL call for seeding: the `data`, or an error carrying the answer's `errors`.
pub async fn graphql(port: u16, bearer: Option<&str>, query: &str, variables: Value) -> anyhow::Result<Value> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::post("/graphql")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json");
    if let Some(token) = bearer {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let res = sender
        .send_request(req.body(Full::new(graphql_body(query, &variables)))?)
        .await?;
    let value: Value = serde_json::from_slice(&res.into_body().collect().await?.to_bytes())?;
    if value.get("errors").is_some() {
        bail!("seeding failed: {value}");
    }
    Ok(value["data"].clone())
}

/// Waits until something accepts connections on `port`.
pub async fn wait_for_port(port: u16) -> anyhow::Result<()> {
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("nothing listens on port {port}")
}

/// Waits until `GET path` answers 2xx.
pub async fn wait_for(port: u16, path: &str) -> anyhow::Result<()> {
    for _ in 0..600 {
        if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await
            && let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
        {
            tokio::spawn(conn);
            let req = Request::get(path)
                .header("host", "127.0.0.1")
                .body(Full::new(Bytes::new()))?;
            if sender.send_request(req).await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("server on port {port} did not come up")
}

/// Starts `licensing-api` on `data_dir` (pinned to core 0) with `WORKERS=workers` and `extra`
/// environment, and waits until it is ready: (server, port, owner token).
pub async fn launch_api(
    bin_dir: &Path,
    data_dir: &Path,
    workers: &str,
    extra: &[(&str, String)],
) -> anyhow::Result<(Server, u16, String)> {
    let port = free_port()?;
    let mut env = vec![
        ("DATA_DIR", data_dir.display().to_string()),
        ("LISTEN_ADDR", format!("127.0.0.1:{port}")),
        ("LICENSING_SECRET", SECRET.to_owned()),
        ("WORKERS", workers.to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    env.extend(extra.iter().cloned());
    let server = Server {
        child: spawn_pinned(&bin_dir.join("licensing-api"), &[], &env)?,
        dir: None,
    };
    wait_for(port, "/readyz").await?;
    let token = std::fs::read_to_string(data_dir.join("owner-token"))?.trim().to_owned();
    Ok((server, port, token))
}

/// Prints `<id> <ours>/<anchor> = <ratio> (bar >= <bar>) PASS|FAIL<note>`.
pub fn report(id: &str, ours: f64, anchor: f64, bar: f64, note: &str) {
    let ratio = if anchor > 0.0 { ours / anchor } else { 0.0 };
    println!(
        "{id} {ours:.0}/{anchor:.0} = {ratio:.3} (bar >= {bar}) {}{note}",
        if ratio >= bar { "PASS" } else { "FAIL" }
    );
}
