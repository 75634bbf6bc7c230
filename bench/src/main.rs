//! `licensing-bench`: the benchmark harness of PERFORMANCE.md. Every result is a ratio to an
//! anchor measured in the same run on the same machine:
//!
//! - A1 `validateLicense` (key + fingerprint) and A2 `heartbeat` (device token) against the
//!   real `licensing-api` on SQLite, anchored on a bare actix-web POST endpoint that parses and
//!   returns small JSON. Servers run pinned to core 0, the load generator to core 1; each
//!   measurement is repeated and interleaved, the median reported, every response checked.
//! - C1: the client's offline check of a license file (parse, verify, rules) against a raw
//!   Ed25519 verification of the same bytes.
//! - B1 and B2: `recordUsage` and a usage report import ([`usage`]).
//! - D1 and D3: the heartbeat sweep and the renewal scan ([`sweeps`], which also seeds the
//!   catalog the D scenarios share).
//! - D2: the anomaly scan, full and incremental ([`anomaly_scan`]).
//!
//! Run `cargo build --release --workspace && target/release/licensing-bench --quick`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use serde_json::{Value, json};

mod anomaly_scan;
mod sweeps;
mod usage;

#[derive(Parser)]
#[command(
    name = "licensing-bench",
    about = "Benchmarks licensing against anchors measured in the same run"
)]
struct Cli {
    /// A short run (under two minutes): 2 s per measurement, 3 repetitions.
    #[arg(long)]
    quick: bool,
    /// Directory holding the release `licensing-api` (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Run only the scenarios of these letters (e.g. `D` or `AC`); default all.
    #[arg(long)]
    only: Option<String>,
    /// Internal: serve the bare actix-web anchor on this address.
    #[arg(long, hide = true)]
    anchor: Option<String>,
}

const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";
const VALIDATE: &str =
    "mutation($k: String!, $f: String) { validateLicense(input: {licenseKey: $k, fingerprint: $f}) { valid code } }";
const HEARTBEAT: &str = "mutation { heartbeat { updateAvailable licenseVersion } }";

/// A process we started, stopped by its pid when dropped.
struct Server {
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `program` pinned to core 0.
fn spawn_pinned(program: &Path, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<Child> {
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

/// CPU seconds a process has used (user + system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .map_or(0.0, |f| f.iter().filter_map(|t| t.parse::<f64>().ok()).sum());
    ticks / 100.0
}

/// Peak resident memory of a process in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// One request shape the load generator sends, and how to check each answer.
#[derive(Clone)]
struct Load {
    port: u16,
    path: &'static str,
    /// The body of the n-th request (most loads send the same one every time).
    body: std::sync::Arc<dyn Fn(u64) -> Bytes + Send + Sync>,
    bearer: Option<String>,
    check: fn(&Value) -> bool,
}

/// Numbers requests across every load driven in this process (unique idempotency keys).
static NEXT_REQUEST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A body sent unchanged with every request.
fn fixed(body: Bytes) -> std::sync::Arc<dyn Fn(u64) -> Bytes + Send + Sync> {
    std::sync::Arc::new(move |_| body.clone())
}

/// Sends `load` over `connections` keep-alive connections for `duration`; returns
/// (checked responses per second, failures).
async fn drive(load: &Load, connections: usize, duration: Duration) -> anyhow::Result<(f64, u64)> {
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
                let mut req = Request::post(load.path)
                    .header("host", "127.0.0.1")
                    .header("content-type", "application/json");
                if let Some(token) = &load.bearer {
                    req = req.header("authorization", format!("Bearer {token}"));
                }
                let n = NEXT_REQUEST.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let res = sender.send_request(req.body(Full::new((load.body)(n)))?).await?;
                let status = res.status();
                let body = res.into_body().collect().await?.to_bytes();
                let good =
                    status.is_success() && serde_json::from_slice::<Value>(&body).is_ok_and(|v| (load.check)(&v));
                if good { ok += 1 } else { failed += 1 }
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

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

async fn graphql(port: u16, bearer: Option<&str>, query: &str, variables: Value) -> anyhow::Result<Value> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::post("/graphql")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json");
    if let Some(token) = bearer {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let body = serde_json::to_vec(&json!({ "query": query, "variables": variables }))?;
    let res = sender.send_request(req.body(Full::new(Bytes::from(body)))?).await?;
    let value: Value = serde_json::from_slice(&res.into_body().collect().await?.to_bytes())?;
    if value.get("errors").is_some() {
        bail!("seeding failed: {value}");
    }
    Ok(value["data"].clone())
}

async fn wait_for(port: u16, path: &str) -> anyhow::Result<()> {
    for _ in 0..400 {
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

/// Starts `licensing-api` on `data_dir` (pinned to core 0) with `WORKERS=workers` and waits
/// until it is ready: (server, port, owner token).
async fn launch_api(bin_dir: &Path, data_dir: &Path, workers: &str) -> anyhow::Result<(Server, u16, String)> {
    let port = free_port()?;
    let env = [
        ("DATA_DIR", data_dir.display().to_string()),
        ("LISTEN_ADDR", format!("127.0.0.1:{port}")),
        ("LICENSING_SECRET", SECRET.to_owned()),
        ("WORKERS", workers.to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let server = Server {
        child: spawn_pinned(&bin_dir.join("licensing-api"), &[], &env)?,
        _dir: None,
    };
    wait_for(port, "/readyz").await?;
    let token = std::fs::read_to_string(data_dir.join("owner-token"))?.trim().to_owned();
    Ok((server, port, token))
}

/// The licensing API with one license, policy and activated device: (server, port, key, device token).
async fn start_api(bin_dir: &Path) -> anyhow::Result<(Server, u16, String, String)> {
    let dir = tempfile::tempdir()?;
    let (mut server, port, token) = launch_api(bin_dir, dir.path(), "embedded").await?;
    server._dir = Some(dir);
    let product = graphql(
        port,
        Some(&token),
        "mutation { createProduct(input: {name: \"Bench\", code: \"bench\"}) { id } }",
        json!({}),
    )
    .await?["createProduct"]["id"]
        .clone();
    let policy = graphql(
        port,
        Some(&token),
        "mutation($p: ID!) { createPolicy(input: {productId: $p, name: \"B\", maxActivations: 10, heartbeatIntervalSeconds: 3600}) { id } }",
        json!({ "p": product }),
    )
    .await?["createPolicy"]["id"]
    .clone();
    let key = graphql(
        port,
        Some(&token),
        "mutation($p: ID!) { issueLicense(input: {policyId: $p}) { key } }",
        json!({ "p": policy }),
    )
    .await?["issueLicense"]["key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let activation = graphql(
        port,
        None,
        "mutation($k: String!) { activateDevice(input: {licenseKey: $k, fingerprint: \"bench-host\"}) { deviceToken } }",
        json!({ "k": key }),
    )
    .await?;
    let device_token = activation["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok((server, port, key, device_token))
}

/// C1: verifications per second of a raw Ed25519 check vs the full offline check of a file.
fn c1(iterations: u32) -> anyhow::Result<(f64, f64)> {
    use ed25519_dalek::Signer as _;
    let key = protocol::signing::signing_key_from_seed(&[7; 32]);
    let public = key.verifying_key();
    let now = chrono::Utc::now();
    let components =
        protocol::fingerprint::components([("mac", "aa:bb:cc"), ("cpu", "x86"), ("disk", "d1"), ("hostid", "h")])?;
    let payload = protocol::license_file::LicensePayload {
        format: protocol::license_file::FORMAT,
        license_id: "0000".into(),
        license_key_hint: "ABCD".into(),
        vendor: "bench".into(),
        product: "bench".into(),
        policy: "policy".into(),
        status: "ACTIVE".into(),
        entitlements: vec!["pro".into(), "sso".into()],
        meters: vec![],
        issued_at: now,
        expires_at: Some(now + chrono::Duration::days(30)),
        refresh_by: now + chrono::Duration::days(7),
        grace_seconds: 604_800,
        version: 3,
        server_time: now,
        device: protocol::license_file::DeviceBinding {
            id: "device".into(),
            fingerprint: protocol::fingerprint::fingerprint(&components),
            components: components.clone(),
        },
        min_component_matches: Some(3),
        heartbeat_interval_seconds: Some(3600),
        checked_out_until: None,
        usage_ack: None,
    };
    let kid = protocol::signing::key_id(&public);
    let file = protocol::license_file::sign(&payload, &kid, &key)?;
    // A vendor ships its current and previous key; the check picks the one the file names.
    let keys = [
        protocol::signing::signing_key_from_seed(&[8; 32]).verifying_key(),
        public,
    ];
    let bytes = serde_json::to_vec(&payload)?;
    let sig = key.sign(&bytes);
    let needed = vec!["pro".to_owned()];

    let started = Instant::now();
    for _ in 0..iterations {
        public.verify_strict(std::hint::black_box(&bytes), &sig)?;
    }
    let raw = f64::from(iterations) / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for _ in 0..iterations {
        let status = client::check(std::hint::black_box(&file), &keys, &components, &needed, now, Some(now));
        if !status.valid {
            bail!("the bench file should validate: {}", status.detail);
        }
    }
    let ours = f64::from(iterations) / started.elapsed().as_secs_f64();
    Ok((ours, raw))
}

/// Prints `<id> <ours>/<anchor> = <ratio> (bar >= <bar>) PASS|FAIL`.
fn report(id: &str, ours: f64, anchor: f64, bar: f64, note: &str) {
    let ratio = if anchor > 0.0 { ours / anchor } else { 0.0 };
    println!(
        "{id} {ours:.0}/{anchor:.0} = {ratio:.3} (bar >= {bar}) {}{note}",
        if ratio >= bar { "PASS" } else { "FAIL" }
    );
}

fn anchor_server(addr: &str) -> anyhow::Result<()> {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let addr = addr.to_owned();
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(|| {
            App::new().route(
                "/json",
                web::post().to(|body: web::Json<Value>| async move {
                    HttpResponse::Ok().json(json!({ "valid": body.get("licenseKey").is_some(), "code": "VALID" }))
                }),
            )
        })
        .workers(1)
        .bind(addr)?
        .run()
        .await
    })?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(addr) = &cli.anchor {
        return anchor_server(addr);
    }
    // The load generator runs on core 1; servers are started on core 0.
    if std::env::var_os("LICENSING_BENCH_PINNED").is_none() {
        let status = Command::new("taskset")
            .arg("-c")
            .arg("1")
            .arg(std::env::current_exe()?)
            .args(std::env::args().skip(1))
            .env("LICENSING_BENCH_PINNED", "1")
            .status()
            .context("re-running pinned to core 1 (is taskset installed?)")?;
        std::process::exit(status.code().unwrap_or(1));
    }
    let bin_dir = match &cli.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    let (duration, reps) = if cli.quick {
        (Duration::from_secs(2), 3)
    } else {
        (Duration::from_secs(10), 5)
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let wants = |letter: char| {
            cli.only
                .as_deref()
                .is_none_or(|only| only.to_uppercase().contains(letter))
        };
        if wants('A') || wants('M') {
            let anchor_port = free_port()?;
            let anchor_addr = format!("127.0.0.1:{anchor_port}");
            let anchor = Server {
                child: spawn_pinned(&std::env::current_exe()?, &["--anchor", &anchor_addr], &[])?,
                _dir: None,
            };
            let (api, api_port, key, device_token) = start_api(&bin_dir).await?;
            let anchor_load = Load {
                port: anchor_port,
                path: "/json",
                body: fixed(Bytes::from(serde_json::to_vec(
                    &json!({ "licenseKey": key, "fingerprint": "bench-host" }),
                )?)),
                bearer: None,
                check: |v| v["valid"] == true,
            };
            let a1 = Load {
                port: api_port,
                path: "/graphql",
                body: fixed(Bytes::from(serde_json::to_vec(
                    &json!({ "query": VALIDATE, "variables": { "k": key, "f": "bench-host" } }),
                )?)),
                bearer: None,
                check: |v| v["data"]["validateLicense"]["valid"] == true,
            };
            let a2 = Load {
                port: api_port,
                path: "/graphql",
                body: fixed(Bytes::from(serde_json::to_vec(&json!({ "query": HEARTBEAT }))?)),
                bearer: Some(device_token),
                check: |v| v["data"]["heartbeat"]["updateAvailable"] == false,
            };
            // Warm-up pass.
            for load in [&anchor_load, &a1, &a2] {
                drive(load, cli.connections, Duration::from_millis(500)).await?;
            }
            let (mut anchor_rates, mut a1_rates, mut a2_rates) = (Vec::new(), Vec::new(), Vec::new());
            let (mut anchor_busy, mut a1_busy, mut a2_busy) = (Vec::new(), Vec::new(), Vec::new());
            let mut failures = 0;
            for _ in 0..reps {
                for (load, rates, pid, busy) in [
                    (&anchor_load, &mut anchor_rates, anchor.pid(), &mut anchor_busy),
                    (&a1, &mut a1_rates, api.pid(), &mut a1_busy),
                    (&a2, &mut a2_rates, api.pid(), &mut a2_busy),
                ] {
                    let cpu = cpu_seconds(pid);
                    let started = Instant::now();
                    let (rate, failed) = drive(load, cli.connections, duration).await?;
                    busy.push((cpu_seconds(pid) - cpu) / started.elapsed().as_secs_f64());
                    rates.push(rate);
                    failures += failed;
                }
            }
            if failures > 0 {
                bail!("{failures} responses failed their check");
            }
            let anchor_rate = median(anchor_rates);
            let busy = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min) * 100.0;
            let note = |ours: &[f64]| {
                format!(
                    " [server core busy: anchor >= {:.0}%, ours >= {:.0}%]",
                    busy(&anchor_busy),
                    busy(ours)
                )
            };
            report("A1", median(a1_rates), anchor_rate, 0.15, &note(&a1_busy));
            report("A2", median(a2_rates), anchor_rate, 0.15, &note(&a2_busy));
            let rss = peak_rss_mib(api.pid());
            println!(
                "M1 peak RSS of licensing-api under A1/A2 = {rss:.1} MiB (bar <= 64) {}",
                if rss <= 64.0 { "PASS" } else { "FAIL" }
            );
            drop(anchor);
        }
        if wants('B') {
            usage::run(&bin_dir, cli.quick, cli.connections, duration, reps).await?;
        }
        if wants('C') {
            let (ours, raw) = c1(if cli.quick { 20_000 } else { 100_000 })?;
            report("C1", ours, raw, 0.80, "");
        }
        if wants('D') {
            sweeps::run(&bin_dir, cli.quick).await?;
            anomaly_scan::run(&bin_dir, cli.quick).await?;
        }
        anyhow::Ok(())
    })
}
