//! The end-to-end harness: starts the real `licensing-api` binary on a free loopback port
//! against a fresh SQLite file or a fresh PostgreSQL database, and talks to it over HTTP like
//! any client would. PostgreSQL comes from `LICENSING_TEST_PG_URL` (an admin URL of a server
//! that `scripts/test.sh` starts); every test creates its own database on it.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness: a failure should stop the test loudly"
)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The master secret every test server runs with (tests derive session keys from it).
pub const TEST_SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file in the server's data directory.
    Sqlite,
    /// A fresh database on the PostgreSQL server named by `LICENSING_TEST_PG_URL`.
    Postgres,
}

/// Runs one async test body against both databases, as two `#[test]`s.
#[macro_export]
macro_rules! on_both_databases {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body($crate::Backend::Postgres).await;
            }
        }
    };
}

/// A directory holding the workspace's built binaries (`target/debug`).
#[must_use]
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test binary> -> target/debug
    exe.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

/// The path of a workspace binary, checked to exist.
#[must_use]
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A fresh database URL for `backend`, with files under `dir`.
async fn fresh_database(backend: Backend, dir: &Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}/licensing.db?mode=rwc", dir.display()),
        Backend::Postgres => {
            let admin = std::env::var("LICENSING_TEST_PG_URL").expect(
                "LICENSING_TEST_PG_URL is not set: run the suite with scripts/test.sh, which starts PostgreSQL",
            );
            let name = format!("t_{}", uuid::Uuid::now_v7().simple());
            let db = sea_orm::Database::connect(format!("{admin}/postgres"))
                .await
                .expect("connect to PostgreSQL");
            sea_orm::ConnectionTrait::execute_unprepared(&db, &format!("CREATE DATABASE {name}"))
                .await
                .expect("create database");
            db.close().await.ok();
            format!("{admin}/{name}")
        }
    }
}

/// A running `licensing-api` process with its own data directory and database.
pub struct TestServer {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// The server's `DATA_DIR`.
    pub data_dir: tempfile::TempDir,
    /// The server's `DATABASE_URL`.
    pub database_url: String,
    /// The owner token printed on first start.
    pub owner_token: String,
    /// Which database it runs on.
    pub backend: Backend,
    http: reqwest::Client,
}

impl TestServer {
    /// Starts a server on a fresh database and waits until it answers.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    /// Starts a server with extra environment variables.
    pub async fn start_with(backend: Backend, env: &[(&str, &str)]) -> Self {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let database_url = fresh_database(backend, data_dir.path()).await;
        let port = free_port();
        let log = std::fs::File::create(data_dir.path().join("server.log")).expect("log file");
        let mut command = Command::new(binary("licensing-api"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATA_DIR", data_dir.path())
            .env("DATABASE_URL", &database_url)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("LICENSING_SECRET", TEST_SECRET)
            .env("LICENSING_CLOCK_OFFSET_FILE", data_dir.path().join("clock-offset"))
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log));
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn licensing-api");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let base_url = format!("http://127.0.0.1:{port}");
        let mut server = Self {
            child,
            base_url,
            data_dir,
            database_url,
            owner_token: String::new(),
            backend,
            http,
        };
        server.wait_until_up().await;
        server.owner_token = std::fs::read_to_string(server.data_dir.path().join("owner-token"))
            .expect("owner-token written on first start")
            .trim()
            .to_owned();
        server
    }

    async fn wait_until_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("licensing-api exited with {status}:\n{}", self.log());
            }
            if let Ok(res) = self.http.get(format!("{}/readyz", self.base_url)).send().await
                && res.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "licensing-api did not become ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Moves the server's clock: from now on it runs `seconds` ahead of the real one.
    pub fn set_clock_offset(&self, seconds: i64) {
        std::fs::write(self.data_dir.path().join("clock-offset"), seconds.to_string()).expect("write clock offset");
    }

    /// What the server printed so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("server.log")).unwrap_or_default()
    }

    /// The HTTP client.
    #[must_use]
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends a GraphQL operation with a bearer token and returns the whole JSON response.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut req = self
            .http
            .post(format!("{}/graphql", self.base_url))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.expect("request");
        assert_eq!(res.status(), 200, "GraphQL answers 200");
        res.json().await.expect("JSON body")
    }

    /// Sends an operation with `token` and returns `data`, failing on any error.
    pub async fn ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let res = self.gql(Some(token), query, variables).await;
        assert!(res.get("errors").is_none(), "unexpected errors: {res}");
        res["data"].clone()
    }

    /// Runs `licensing-api create-vendor` against this server's database; returns (id, token).
    pub fn create_vendor(&self, name: &str, slug: &str, owner_email: &str) -> (String, String) {
        let out = Command::new(binary("licensing-api"))
            .args([
                "create-vendor",
                "--name",
                name,
                "--slug",
                slug,
                "--owner-email",
                owner_email,
            ])
            .env("DATA_DIR", self.data_dir.path())
            .env("DATABASE_URL", &self.database_url)
            .env("LICENSING_SECRET", TEST_SECRET)
            .output()
            .expect("run create-vendor");
        assert!(
            out.status.success(),
            "create-vendor failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: Value = serde_json::from_slice(&out.stdout).expect("create-vendor prints one JSON object");
        (
            printed["vendor_id"].as_str().unwrap().to_owned(),
            printed["token"].as_str().unwrap().to_owned(),
        )
    }

    /// A direct connection to the server's database (for fault injection and invariants).
    pub async fn database(&self) -> sea_orm::DatabaseConnection {
        sea_orm::Database::connect(&self.database_url)
            .await
            .expect("connect to the test database")
    }
}

impl TestServer {
    /// Stops the server (for checks that must work with no server running).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- server log (tail) ----\n{}", tail(&self.log(), 200));
        }
    }
}

/// The last `lines` lines of a log.
fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The `extensions.code` of the first error, if any.
#[must_use]
pub fn error_code(response: &Value) -> Option<&str> {
    response["errors"][0]["extensions"]["code"].as_str()
}

/// Ids of a small catalog made through the API: one product, policy, customer and license.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// Product id.
    pub product: String,
    /// Policy id (30-day duration, 5 seats, entitlement `pro`).
    pub policy: String,
    /// Customer id (external id `C-1`).
    pub customer: String,
    /// License id.
    pub license: String,
    /// The license key in full.
    pub key: String,
}

/// Creates a product, a policy, a customer and a license with `token`.
pub async fn seed(server: &TestServer, token: &str) -> Seeded {
    let product = server
        .ok(
            token,
            "mutation { createProduct(input: {name: \"Pro\", code: \"pro\"}) { id } }",
            json!({}),
        )
        .await["createProduct"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let policy = server
        .ok(
            token,
            "mutation($p: ID!) { createPolicy(input: {productId: $p, name: \"Annual\", durationSeconds: 2592000, maxActivations: 5, entitlements: [\"pro\"]}) { id } }",
            json!({ "p": product }),
        )
        .await["createPolicy"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let customer = server
        .ok(token, "mutation { upsertCustomer(input: {externalId: \"C-1\", name: \"Acme\", email: \"ops@acme.test\"}) { id } }", json!({}))
        .await["upsertCustomer"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let issued = server
        .ok(
            token,
            "mutation($p: ID!, $c: ID) { issueLicense(input: {policyId: $p, customerId: $c}) { id key } }",
            json!({ "p": policy, "c": customer }),
        )
        .await;
    Seeded {
        product,
        policy,
        customer,
        license: issued["issueLicense"]["id"].as_str().unwrap().to_owned(),
        key: issued["issueLicense"]["key"].as_str().unwrap().to_owned(),
    }
}

/// Creates an API token of `role` with `token` and returns its secret.
pub async fn api_token(server: &TestServer, token: &str, role: &str) -> String {
    let data = server
        .ok(
            token,
            "mutation($r: Role!) { createApiToken(input: {name: \"test\", role: $r}) { token } }",
            json!({ "r": role }),
        )
        .await;
    data["createApiToken"]["token"].as_str().unwrap().to_owned()
}

/// A product and a policy built from `policy_fields` (GraphQL input fields, e.g.
/// `maxActivations: 3, floating: true`), and a license under it; returns (policy id, license id, key).
pub async fn license_with_policy(server: &TestServer, token: &str, policy_fields: &str) -> (String, String, String) {
    let code = format!("p{}", uuid::Uuid::now_v7().simple());
    let product = server
        .ok(
            token,
            "mutation($c: String!) { createProduct(input: {name: \"P\", code: $c}) { id } }",
            json!({ "c": code }),
        )
        .await["createProduct"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let query = format!(
        "mutation($p: ID!) {{ createPolicy(input: {{productId: $p, name: \"T\", {policy_fields}}}) {{ id }} }}"
    );
    let policy = server.ok(token, &query, json!({ "p": product })).await["createPolicy"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let license = server
        .ok(
            token,
            "mutation($p: ID!) { issueLicense(input: {policyId: $p}) { id key } }",
            json!({ "p": policy }),
        )
        .await;
    (
        policy,
        license["issueLicense"]["id"].as_str().unwrap().to_owned(),
        license["issueLicense"]["key"].as_str().unwrap().to_owned(),
    )
}

/// Four fingerprint components named mac, cpu, disk, hostid with values ending in `tag`.
#[must_use]
pub fn components(tag: &str) -> Value {
    json!([
        { "name": "mac", "value": format!("mac-{tag}") },
        { "name": "cpu", "value": format!("cpu-{tag}") },
        { "name": "disk", "value": format!("disk-{tag}") },
        { "name": "hostid", "value": format!("host-{tag}") },
    ])
}

/// The activation mutation, selecting the device, token and file.
pub const ACTIVATE: &str = "mutation($in: ActivateDeviceInput!) { activateDevice(input: $in) { deviceToken licenseFile device { id status } } }";

/// Activates `fingerprint` on `key` (anonymous, as the shipped software does).
pub async fn activate(server: &TestServer, key: &str, fingerprint: &str, components: Value) -> Value {
    server
        .gql(
            None,
            ACTIVATE,
            json!({ "in": { "licenseKey": key, "fingerprint": fingerprint, "components": components } }),
        )
        .await
}

/// Devices holding a seat of `license` (its `activeDevices`).
pub async fn active_devices(server: &TestServer, license: &str) -> i64 {
    let query = "query($id: ID) { license(id: $id) { activeDevices } }";
    server.ok(&server.owner_token, query, json!({ "id": license })).await["license"]["activeDevices"]
        .as_i64()
        .unwrap()
}

/// Verifies a license file with the vendor keys `signingKeys` lists, as any client would.
pub async fn verify_license_file(server: &TestServer, file: &str) -> protocol::license_file::LicensePayload {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    let keys = server
        .ok(&server.owner_token, "{ signingKeys { kid publicKeyPem } }", json!({}))
        .await;
    let keys: Vec<(String, ed25519_dalek::VerifyingKey)> = keys["signingKeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let pem = k["publicKeyPem"].as_str().unwrap();
            (
                k["kid"].as_str().unwrap().to_owned(),
                ed25519_dalek::VerifyingKey::from_public_key_pem(pem).unwrap(),
            )
        })
        .collect();
    protocol::license_file::verify(file, |kid| keys.iter().find(|(k, _)| k == kid).map(|(_, v)| *v))
        .expect("the file verifies")
}

/// An activation request for `key`, signed by the device key derived from `seed`, as the
/// client writes it.
#[must_use]
pub fn activation_request(
    key: &str,
    seed: u8,
    fingerprint: &str,
    components: protocol::fingerprint::Components,
) -> String {
    let device_key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let request = protocol::offline::ActivationRequest {
        format: protocol::offline::FORMAT,
        license_key: key.to_owned(),
        fingerprint: fingerprint.to_owned(),
        components,
        device_public_key: protocol::offline::encode_public_key(&device_key.verifying_key()),
        hostname: Some(format!("plant-{seed}")),
        platform: Some("linux-x86_64".into()),
        created_at: chrono::Utc::now(),
    };
    protocol::offline::write_request(&request, &device_key).unwrap()
}

/// A deactivation file for the device a license file (from the offline portal) is bound to,
/// signed by the device key derived from `seed` and carrying one ledger record per
/// `(meter, quantity)`, as the client writes it.
#[must_use]
pub fn deactivation_file(seed: u8, license_file: &str, usage: &[(&str, i64)]) -> String {
    let device_key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let payload: protocol::license_file::LicensePayload =
        protocol::envelope::open(protocol::license_file::LABEL, license_file)
            .unwrap()
            .payload()
            .unwrap();
    let device_id = payload.device.id;
    let mut records: Vec<protocol::ledger::LedgerRecord> = Vec::new();
    for (meter, quantity) in usage {
        let record = protocol::ledger::append(
            &device_id,
            &device_key,
            records.last(),
            meter,
            *quantity,
            chrono::Utc::now(),
        );
        records.push(record);
    }
    let file = protocol::offline::DeactivationFile {
        format: protocol::offline::FORMAT,
        license_id: payload.license_id,
        device_id,
        fingerprint: payload.device.fingerprint,
        license_file_time: payload.server_time,
        deactivated_at: chrono::Utc::now(),
        records,
    };
    protocol::offline::write(&file, &device_key).unwrap()
}

/// What one `licensing-client` run did.
#[derive(Debug)]
pub struct ClientRun {
    /// Exit status (0 ok / valid, 1 not valid, 2 failed).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// The real `licensing-client` binary on one machine: its own state directory, the vendor's
/// public keys, fixed fingerprint components and a clock offset.
pub struct ClientMachine {
    /// The state directory's parent (the state itself is `state/` inside).
    pub dir: tempfile::TempDir,
    /// `name=value,...` passed as `--components`.
    pub components: String,
    /// Seconds added to the client's clock.
    pub clock_offset: i64,
}

impl ClientMachine {
    /// A machine with these components, trusting every signing key `token`'s vendor lists.
    pub async fn new(server: &TestServer, token: &str, components: &str) -> Self {
        let keys = server.ok(token, "{ signingKeys { publicKeyPem } }", json!({})).await;
        let pem: String = keys["signingKeys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["publicKeyPem"].as_str().unwrap().to_owned())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vendor.pem"), pem).unwrap();
        Self {
            dir,
            components: components.to_owned(),
            clock_offset: 0,
        }
    }

    /// Another machine trusting the same vendor keys, with an empty state (no server needed).
    #[must_use]
    pub fn sibling(&self, components: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(self.dir.path().join("vendor.pem"), dir.path().join("vendor.pem")).unwrap();
        Self {
            dir,
            components: components.to_owned(),
            clock_offset: 0,
        }
    }

    /// The state directory.
    #[must_use]
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A path in this machine's scratch directory.
    #[must_use]
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `licensing-client <args>` with this machine's state, key, components and clock.
    #[must_use]
    pub fn run(&self, args: &[&str]) -> ClientRun {
        let out = Command::new(binary("licensing-client"))
            .arg("--state")
            .arg(self.state())
            .arg("--public-key")
            .arg(self.dir.path().join("vendor.pem"))
            .arg("--components")
            .arg(&self.components)
            .args(args)
            .env("LICENSING_CLIENT_CLOCK_OFFSET_SECONDS", self.clock_offset.to_string())
            .output()
            .expect("run licensing-client");
        ClientRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed; returns its output.
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(run.code, 0, "licensing-client {args:?} failed: {run:?}");
        run.stdout
    }

    /// `status --json`, parsed, with the exit code checked against `valid`.
    #[must_use]
    pub fn status(&self) -> Value {
        let run = self.run(&["status", "--json"]);
        let status: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("status --json: {e}: {run:?}"));
        assert_eq!(run.code, if status["valid"] == true { 0 } else { 1 }, "{run:?}");
        status
    }
}

/// Waits up to `timeout` for `check` to return `Some`, polling every 100 ms.
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A real SMTP server on a free loopback port (Debian's `python3-aiosmtpd` with
/// `tests/support/licensing_sink.py`): keeps every accepted message, refuses recipients
/// starting with `reject` with 550, and can be stopped and started again on the same port.
pub struct SmtpSink {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    delay_seconds: u32,
}

impl SmtpSink {
    /// Starts a sink that accepts at once.
    #[must_use]
    pub fn start() -> Self {
        Self::start_with_delay(0)
    }

    /// Starts a sink that takes `delay_seconds` over each message's DATA.
    #[must_use]
    pub fn start_with_delay(delay_seconds: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("licensing_sink.py"),
            include_str!("../support/licensing_sink.py"),
        )
        .unwrap();
        let mut sink = Self {
            child: None,
            port: free_port(),
            dir,
            delay_seconds,
        };
        sink.resume();
        sink
    }

    /// `smtp://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Stops accepting connections (the port stays reserved for [`SmtpSink::resume`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts (again) on the same port and waits until it answers.
    pub fn resume(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("sink.log")).unwrap();
        let child = Command::new("/usr/bin/python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "licensing_sink.Sink"])
            .arg(self.dir.path().join("maildir"))
            .arg(self.delay_seconds.to_string())
            .env("PYTHONPATH", self.dir.path())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the SMTP sink: apt-get install python3-aiosmtpd (scripts/test.sh does)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the SMTP sink did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether a message is being received right now (with a delay).
    #[must_use]
    pub fn receiving(&self) -> bool {
        self.dir.path().join("maildir").join("receiving").exists()
    }

    /// Every message accepted so far, parsed.
    #[must_use]
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("maildir").join("new"))
            .map(|dir| dir.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
    }

    /// Waits until at least `n` messages arrived; returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        eventually(timeout, &format!("{n} emails"), || async {
            let messages = self.messages();
            (messages.len() >= n).then_some(messages)
        })
        .await
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A message's subject, text body and attachments (name, text).
#[must_use]
pub fn parse_email(raw: &[u8]) -> (String, String, Vec<(String, String)>, String) {
    use mail_parser::MimeHeaders as _;
    let message = mail_parser::MessageParser::default()
        .parse(raw)
        .expect("a MIME message");
    let attachments = message
        .attachments()
        .map(|a| {
            (
                a.attachment_name().unwrap_or_default().to_owned(),
                String::from_utf8_lossy(a.contents()).into_owned(),
            )
        })
        .collect();
    (
        message.subject().unwrap_or_default().to_owned(),
        message.body_text(0).unwrap_or_default().into_owned(),
        attachments,
        message.message_id().unwrap_or_default().to_owned(),
    )
}

/// A throwaway Redis server on a free loopback port.
pub struct RedisServer {
    child: Child,
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
}

impl RedisServer {
    /// Starts it and waits until it answers.
    #[must_use]
    pub fn start() -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server: apt-get install redis-server (scripts/test.sh does)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `licensing-worker` process sharing a server's database, secret, data directory
/// (so its SQLite job queue) and clock.
pub struct WorkerProcess {
    child: Child,
    log: PathBuf,
}

impl WorkerProcess {
    /// Kills it with SIGKILL (no chance to finish anything).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for it to exit; returns whether it exited cleanly.
    #[must_use]
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => return false,
            }
        }
    }

    /// What it logged.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
        // A failing test shows what the worker was doing.
        if std::thread::panicking() {
            eprintln!("---- worker log (tail) ----\n{}", tail(&self.log(), 200));
        }
    }
}

impl TestServer {
    /// Starts a `licensing-worker` next to this server with extra environment variables
    /// (`SMTP_URL`, `REDIS_URL`, `HEARTBEAT_SWEEP_SECS`...).
    #[must_use]
    pub fn start_worker(&self, env: &[(&str, &str)]) -> WorkerProcess {
        let log = self
            .data_dir
            .path()
            .join(format!("worker-{}.log", uuid::Uuid::now_v7().simple()));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(binary("licensing-worker"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATA_DIR", self.data_dir.path())
            .env("DATABASE_URL", &self.database_url)
            .env("LICENSING_SECRET", TEST_SECRET)
            .env("LICENSING_CLOCK_OFFSET_FILE", self.data_dir.path().join("clock-offset"))
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file));
        for (k, v) in env {
            command.env(k, v);
        }
        WorkerProcess {
            child: command.spawn().expect("spawn licensing-worker"),
            log,
        }
    }
}

/// A dashboard's websocket subscribed to `alerts` (the `graphql-transport-ws` protocol). A
/// task reads it all the time, as a real client does (the server drops a socket whose
/// transport pings go unanswered).
pub struct AlertSubscriber {
    messages: tokio::sync::mpsc::UnboundedReceiver<Value>,
    reader: tokio::task::JoinHandle<()>,
}

impl AlertSubscriber {
    /// Connects to `/graphql/ws` with `token` in the `connection_init` payload and sends
    /// `document` (e.g. `subscription { alerts { kind } }`).
    ///
    /// # Errors
    /// What the server answered instead of accepting the subscription (a closed connection, an
    /// error).
    pub async fn connect(server: &TestServer, token: Option<&str>, document: &str) -> Result<Self, String> {
        use futures::{SinkExt as _, StreamExt as _};
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        use tokio_tungstenite::tungstenite::http::HeaderValue;

        let url = format!("{}/graphql/ws", server.base_url.replacen("http", "ws", 1));
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("graphql-transport-ws"),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket upgrade");
        let init = token.map_or_else(|| json!({}), |t| json!({ "Authorization": format!("Bearer {t}") }));
        for message in [
            json!({ "type": "connection_init", "payload": init }),
            json!({ "id": "1", "type": "subscribe", "payload": { "query": document } }),
        ] {
            socket.send(Message::text(message.to_string())).await.unwrap();
        }
        let (sender, messages) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(frame) = socket.next().await {
                let message: Value = match frame {
                    Ok(Message::Text(text)) => serde_json::from_str(&text).unwrap(),
                    Ok(Message::Close(frame)) => json!({ "type": "closed", "payload": format!("{frame:?}") }),
                    Ok(_) => continue,
                    Err(e) => json!({ "type": "closed", "payload": e.to_string() }),
                };
                if message["type"] == "ping" {
                    let _ = socket.send(Message::text(json!({ "type": "pong" }).to_string())).await;
                } else if sender.send(message).is_err() {
                    return;
                }
            }
        });
        let mut subscriber = Self { messages, reader };
        match subscriber.next_message(Duration::from_secs(10)).await {
            Some(message) if message["type"] == "connection_ack" => {}
            other => return Err(format!("{other:?}")),
        }
        // An error answers at once; an accepted subscription stays quiet.
        match subscriber.next_message(Duration::from_millis(500)).await {
            Some(message) => Err(message.to_string()),
            None => Ok(subscriber),
        }
    }

    /// The next alert delivered within `timeout`.
    pub async fn next_alert(&mut self, timeout: Duration) -> Option<Value> {
        let message = self.next_message(timeout).await?;
        assert_eq!(message["type"], "next", "{message}");
        assert!(message["payload"]["errors"].is_null(), "{message}");
        Some(message["payload"]["data"]["alerts"].clone())
    }

    /// The next protocol message within `timeout` (`next`, `error`, `complete`, `closed`).
    pub async fn next_message(&mut self, timeout: Duration) -> Option<Value> {
        tokio::time::timeout(timeout, self.messages.recv()).await.ok().flatten()
    }
}

impl Drop for AlertSubscriber {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
