//! W1 (webhook fan-out): 10,000 events (2,000 with `--quick`) to 3 endpoints on loopback, sent
//! by a real `licensing-worker` pinned to the server core, against the same bodies POSTed by one
//! plain HTTP client on that core with as many requests in flight as the sender may have (4 per
//! endpoint). The receiver runs in this process, on the load core, and counts what arrives.
//!
//! The endpoints and one real `license.created` event are made through the API (then stopped);
//! each repetition clones that event row 10,000 times in one statement, and the clock runs from
//! its commit until every delivery is recorded DELIVERED.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde_json::json;

use crate::harness::{SECRET, Server, cpu_seconds, graphql, launch_api, least_percent, median, spawn_pinned};
use crate::sweeps::clone_rows;

/// Endpoints the events go to.
const ENDPOINTS: u64 = 3;
/// Requests in flight per endpoint: the sender's own bound.
const PER_ENDPOINT: u64 = 4;

/// Runs W1 and prints its line.
pub async fn run(bin_dir: &Path, quick: bool, reps: usize) -> anyhow::Result<()> {
    let events: u64 = if quick { 2_000 } else { 10_000 };
    let receiver = Receiver::start().await?;
    let dir = tempfile::tempdir()?;
    let (api, port, token) = launch_api(bin_dir, dir.path(), "off", &[]).await?;
    for n in 0..ENDPOINTS {
        let url = format!("http://127.0.0.1:{}/hooks/{n}", receiver.port);
        graphql(
            port,
            Some(&token),
            "mutation($u: String!) { createWebhookEndpoint(input: {url: $u, events: [\"license.created\"]}) { secret } }",
            json!({ "u": url }),
        )
        .await?;
    }
    let product = graphql(
        port,
        Some(&token),
        "mutation { createProduct(input: {name: \"Hooks\", code: \"hooks\"}) { id } }",
        json!({}),
    )
    .await?["createProduct"]["id"]
        .clone();
    let policy = graphql(
        port,
        Some(&token),
        "mutation($p: ID!) { createPolicy(input: {productId: $p, name: \"H\"}) { id } }",
        json!({ "p": product }),
    )
    .await?["createPolicy"]["id"]
        .clone();
    graphql(
        port,
        Some(&token),
        "mutation($p: ID!) { issueLicense(input: {policyId: $p}) { id } }",
        json!({ "p": policy }),
    )
    .await?;
    drop(api);

    let db = sea_orm::Database::connect(format!("sqlite://{}/licensing.db", dir.path().display())).await?;
    let template = one_text(&db, "SELECT id FROM webhook_events").await?;
    let body = anchor_body(&db, &template).await?;
    let body_file = dir.path().join("anchor-body.json");
    std::fs::write(&body_file, &body)?;
    let worker = Server {
        child: spawn_pinned(
            &bin_dir.join("licensing-worker"),
            &[],
            &[
                ("DATA_DIR", dir.path().display().to_string()),
                ("LICENSING_SECRET", SECRET.to_owned()),
                ("RUST_LOG", "warn".to_owned()),
            ],
        )?,
        dir: None,
    };
    // The template event's deliveries: the worker is up and its connections are open.
    wait_delivered(&db, ENDPOINTS, Duration::from_secs(60)).await?;

    let (mut ours, mut anchor, mut busy) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        let before = receiver.count();
        anchor.push(post_anchor_pinned(receiver.port, ENDPOINTS * events, &body_file).await?);
        ensure!(
            receiver.count() - before == ENDPOINTS * events,
            "the anchor's requests did not all arrive"
        );

        let before = receiver.count();
        let id = format!("printf('evt_w{rep}_%08d', i)");
        clone_rows(
            &db,
            "webhook_events",
            &template,
            0..events,
            &[("id", id.as_str()), ("fanned_out_at", "NULL")],
            Vec::new(),
        )
        .await?;
        let cpu = cpu_seconds(&[worker.pid()]);
        let started = Instant::now();
        let expected = ENDPOINTS * (1 + events * (rep as u64 + 1));
        wait_delivered(&db, expected, Duration::from_secs(600)).await?;
        let seconds = started.elapsed().as_secs_f64();
        ensure!(
            receiver.count() - before == ENDPOINTS * events,
            "{} deliveries arrived for {} promised",
            receiver.count() - before,
            ENDPOINTS * events
        );
        ours.push((ENDPOINTS * events) as f64 / seconds);
        busy.push((cpu_seconds(&[worker.pid()]) - cpu) / seconds);
    }
    crate::harness::report(
        "W1",
        median(ours),
        median(anchor),
        0.5,
        &format!(
            " ({events} events x {ENDPOINTS} endpoints, deliveries/s; worker core busy >= {:.0}%)",
            least_percent(&busy)
        ),
    );
    Ok(())
}

/// The first column of the first row of `sql`, as text.
async fn one_text(db: &DatabaseConnection, sql: &str) -> anyhow::Result<String> {
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::Sqlite, sql))
        .await?
        .with_context(|| format!("no row for {sql}"))?;
    Ok(row.try_get_by_index::<String>(0)?)
}

/// The body the sender POSTs for the template event, built as it builds it.
async fn anchor_body(db: &DatabaseConnection, event: &str) -> anyhow::Result<Vec<u8>> {
    let payload: serde_json::Value = serde_json::from_str(
        &one_text(
            db,
            &format!("SELECT CAST(payload AS TEXT) FROM webhook_events WHERE id = '{event}'"),
        )
        .await?,
    )?;
    let slug = one_text(db, "SELECT slug FROM vendors").await?;
    Ok(serde_json::to_vec(&json!({
        "id": event,
        "type": "license.created",
        "created": chrono::Utc::now().to_rfc3339(),
        "vendor": slug,
        "data": payload,
    }))?)
}

/// Waits until `expected` deliveries are DELIVERED (polled every 10 ms).
async fn wait_delivered(db: &DatabaseConnection, expected: u64, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let row = db
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'DELIVERED'",
            ))
            .await?
            .context("a count")?;
        let delivered: i64 = row.try_get_by_index(0)?;
        if u64::try_from(delivered).unwrap_or(0) >= expected {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{delivered} of {expected} webhook deliveries done in {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs the anchor client pinned to the server core (while this process's receiver answers
/// it); returns its requests per second.
async fn post_anchor_pinned(port: u16, requests: u64, body: &Path) -> anyhow::Result<f64> {
    let spec = format!("{port}:{requests}:{}", body.display());
    let out = tokio::process::Command::new("taskset")
        .args(["-c", "0"])
        .arg(std::env::current_exe()?)
        .args(["--post-anchor", &spec])
        .env("LICENSING_BENCH_PINNED", "1")
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "the anchor client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// The anchor client (`--post-anchor PORT:REQUESTS:BODY_FILE`): POSTs the body to the
/// receiver's endpoints in turn over `ENDPOINTS * PER_ENDPOINT` keep-alive connections, with
/// the sender's headers, checks every answer, and prints requests per second.
pub fn post_anchor(spec: &str) -> anyhow::Result<()> {
    let mut parts = spec.splitn(3, ':');
    let (Some(port), Some(requests), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("--post-anchor PORT:REQUESTS:BODY_FILE");
    };
    let (port, requests): (u16, u64) = (port.parse()?, requests.parse()?);
    let body = Bytes::from(std::fs::read(body)?);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let rate = runtime.block_on(async move {
        let connections = ENDPOINTS * PER_ENDPOINT;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..connections {
            let body = body.clone();
            let share = requests / connections + u64::from(c < requests % connections);
            tasks.push(tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                stream.set_nodelay(true)?;
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                for _ in 0..share {
                    let req = Request::post(format!("/hooks/{}", c % ENDPOINTS))
                        .header("host", "127.0.0.1")
                        .header("content-type", "application/json")
                        .header("licensing-signature", "t=0,v1=00")
                        .header("licensing-event-id", "evt_anchor")
                        .header("licensing-event-type", "license.created")
                        .body(Full::new(body.clone()))?;
                    let res = sender.send_request(req).await?;
                    ensure!(res.status().is_success(), "the receiver said {}", res.status());
                    res.into_body().collect().await?;
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        anyhow::Ok(requests as f64 / started.elapsed().as_secs_f64())
    })?;
    println!("{rate}");
    Ok(())
}

/// A webhook receiver in this process: answers every POST that carries a delivery's headers and
/// a JSON body 200, and counts them.
struct Receiver {
    port: u16,
    count: Arc<AtomicU64>,
}

impl Receiver {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let count = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let counted = Arc::clone(&counted);
                        async move {
                            let signed = req.headers().contains_key("licensing-signature")
                                && req.headers().contains_key("licensing-event-id");
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let good = signed && serde_json::from_slice::<serde_json::Value>(&body).is_ok();
                            if good {
                                counted.fetch_add(1, Ordering::Relaxed);
                            }
                            let status = if good { 200 } else { 400 };
                            let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
                            *res.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
                            Ok::<_, Infallible>(res)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { port, count })
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}
