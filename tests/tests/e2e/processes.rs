//! Files and processes: a fresh `DATA_DIR` and everything the API and its embedded workers
//! put in it are private to the service user; an embedded API whose Redis is down at
//! start-up serves, says not ready, and starts its workers once Redis is there.

#![expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tests::{Backend, RedisServer, TestServer, eventually};

const WAIT: Duration = Duration::from_secs(60);

/// A process killed when the test ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn gql(base: &str, token: &str, query: &str, variables: Value) -> Value {
    let res: Value = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(res.get("errors").is_none(), "{res}");
    res["data"].clone()
}

/// A license expiring in two days for a customer with an email: the renewal scan promises a
/// notice at once.
async fn renewal_notice_due(base: &str, token: &str) {
    let product = gql(
        base,
        token,
        "mutation { createProduct(input: {name: \"P\", code: \"p\"}) { id } }",
        json!({}),
    )
    .await;
    let policy = gql(
        base,
        token,
        "mutation($p: ID!) { createPolicy(input: {productId: $p, name: \"Annual\", maxActivations: 1}) { id } }",
        json!({ "p": product["createProduct"]["id"] }),
    )
    .await;
    let customer = gql(
        base,
        token,
        "mutation { upsertCustomer(input: {externalId: \"erp-1\", name: \"Plant\", email: \"buyer@customer.test\"}) { id } }",
        json!({}),
    )
    .await;
    let expires = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    gql(
        base,
        token,
        "mutation($p: ID!, $c: ID, $e: DateTime) { issueLicense(input: {policyId: $p, customerId: $c, expiresAt: $e}) { id } }",
        json!({ "p": policy["createPolicy"]["id"], "c": customer["upsertCustomer"]["id"], "e": expires }),
    )
    .await;
}

async fn eml_in(outbox: &Path) -> PathBuf {
    eventually(WAIT, "an .eml file", || async {
        std::fs::read_dir(outbox)
            .ok()?
            .flatten()
            .find(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .map(|e| e.path())
    })
    .await
}

/// Every path under `dir`, itself included.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all.extend(walk(&path));
        } else {
            all.push(path);
        }
    }
    all
}

/// The real binary on a `DATA_DIR` that does not exist yet, with nothing configured (a
/// generated secret, the SQLite database and job queue, mail as files): the directory is
/// 0700 and every file in it (database, -wal, -shm, secret, owner token, queue, outbox) 0600,
/// whatever umask it was started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_and_everything_in_it_are_private() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("fresh").join("data");
    let port = tests::free_port();
    let log = std::fs::File::create(root.path().join("server.log")).unwrap();
    let _api = Process(
        // Started with the most permissive umask (through a shell that then becomes the API).
        Command::new("/bin/sh")
            .args(["-c", "umask 000 && exec \"$0\""])
            .arg(tests::binary("licensing-api"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATA_DIR", &data_dir)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("RENEWAL_SCAN_SECS", "1")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    eventually(WAIT, "the API to be ready", || async {
        let res = reqwest::get(format!("{base}/readyz")).await.ok()?;
        res.status().is_success().then_some(())
    })
    .await;
    let token = std::fs::read_to_string(data_dir.join("owner-token")).unwrap();
    renewal_notice_due(&base, token.trim()).await;
    eml_in(&data_dir.join("outbox")).await;

    let all = walk(&data_dir);
    for name in [
        "licensing.db",
        "licensing.db-wal",
        "licensing.db-shm",
        "secret",
        "owner-token",
        "jobs.db",
    ] {
        assert!(all.contains(&data_dir.join(name)), "{name} is in DATA_DIR: {all:?}");
    }
    for path in all {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", path.display());
    }
}

/// The pauses (in seconds) the workers took before each restart, from the server's log.
fn pauses(log: &str) -> Vec<u64> {
    // Without the colours the log is written with.
    let mut plain = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
        .lines()
        .filter(|l| l.contains("the job workers stopped"))
        .filter_map(|l| {
            l.split("retry_in_secs=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

async fn readyz(server: &TestServer) -> (u16, Value) {
    let res = server
        .http()
        .get(format!("{}/readyz", server.base_url))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

/// `WORKERS=embedded` with Redis down at start-up: the API serves GraphQL, `/readyz` says 503
/// (the job workers are unavailable) while the workers retry with backoff, and once Redis
/// listens on that port they connect, `/readyz` turns 200 and a job (an email) goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_api_waits_for_its_redis() {
    let port = tests::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let server = TestServer::start_unready(Backend::Sqlite, &[("REDIS_URL", &url), ("RENEWAL_SCAN_SECS", "1")]).await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["status"].as_str().unwrap().contains("workers"), "{body}");
    let viewer = server.ok(&server.owner_token, "{ viewer { role } }", json!({})).await;
    assert_eq!(viewer["viewer"]["role"], "OWNER");
    renewal_notice_due(&server.base_url, &server.owner_token).await;
    // Still down a few retries later: not given up, not ready.
    eventually(WAIT, "a failed connection attempt", || async {
        server.log().contains("the job workers stopped").then_some(())
    })
    .await;
    let (status, body) = readyz(&server).await;
    assert_eq!(
        (status, body["status"].as_str().unwrap().contains("unavailable")),
        (503, true),
        "{body}"
    );

    let redis = RedisServer::start_on(port);
    eventually(Duration::from_secs(120), "/readyz to say ready", || async {
        (readyz(&server).await.0 == 200).then_some(())
    })
    .await;
    eml_in(&server.data_dir.path().join("outbox")).await;

    // Redis going away under running workers: not ready, restarts paced by the backoff (not a
    // tight loop), ready again once Redis is back.
    drop(redis);
    eventually(WAIT, "/readyz to say not ready", || async {
        (readyz(&server).await.0 == 503).then_some(())
    })
    .await;
    let before = pauses(&server.log()).len();
    let all = eventually(WAIT, "two more paced restarts", || async {
        let all = pauses(&server.log());
        (all.len() >= before + 2).then_some(all)
    })
    .await;
    assert!(
        all.windows(2).all(|w| w[1] == (w[0] * 2).min(60)),
        "each pause doubles the last (up to 60 s): {all:?}"
    );
    let _redis = RedisServer::start_on(port);
    eventually(Duration::from_secs(120), "/readyz to say ready again", || async {
        (readyz(&server).await.0 == 200).then_some(())
    })
    .await;
}
