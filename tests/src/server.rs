//! The API server under test: [`TestServer`] starts the real `licensing-api` binary on a free
//! loopback port against a fresh SQLite file or a fresh PostgreSQL database ([`Backend`]) and
//! sends it GraphQL over HTTP. Also where the workspace's built binaries are found.

use std::fs::File;
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

/// A tool `scripts/test.sh` installs in a venv of its own: the path in the environment variable
/// `env`, else `installed_at` under the user's cache (`$XDG_CACHE_HOME`, else `~/.cache`).
#[must_use]
pub fn test_tool(env: &str, installed_at: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return path.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_default();
    cache.join(installed_at)
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

/// A port nothing listens on right now, for a process the harness (or a test) starts.
#[must_use]
pub fn free_port() -> u16 {
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

/// A command for a service binary (`licensing-api`, `licensing-worker`) with what every test
/// service shares: nothing inherited but `PATH`; `data_dir`, `database_url`, the test secret
/// and the movable clock of one server; its output appended to `log`.
pub(crate) fn service_command(name: &str, data_dir: &Path, database_url: &str, log: &Path) -> Command {
    // Appended to, so a restarted process keeps the log of the one before.
    let log = File::options().create(true).append(true).open(log).expect("log file");
    let mut command = Command::new(binary(name));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", data_dir)
        .env("DATABASE_URL", database_url)
        .env("LICENSING_SECRET", TEST_SECRET)
        .env("LICENSING_CLOCK_OFFSET_FILE", data_dir.join("clock-offset"))
        .env("RUST_LOG", "info,sqlx=warn")
        .stdout(Stdio::from(log.try_clone().expect("log file")))
        .stderr(Stdio::from(log));
    command
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
    port: u16,
    env: Vec<(String, String)>,
}

/// Spawns `licensing-api` on `port`, appending to the data directory's `server.log`.
fn spawn_api(data_dir: &Path, database_url: &str, port: u16, env: &[(String, String)]) -> Child {
    let mut command = service_command("licensing-api", data_dir, database_url, &data_dir.join("server.log"));
    command.env("LISTEN_ADDR", format!("127.0.0.1:{port}"));
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().expect("spawn licensing-api")
}

impl TestServer {
    /// Starts a server on a fresh database and waits until it answers.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    /// Starts a server with extra environment variables.
    pub async fn start_with(backend: Backend, env: &[(&str, &str)]) -> Self {
        Self::launch(backend, env, "/readyz").await
    }

    /// Starts a server with extra environment variables and waits until it answers
    /// `/healthz`, ready or not (`/readyz` may say 503: its job queue down, say).
    pub async fn start_unready(backend: Backend, env: &[(&str, &str)]) -> Self {
        Self::launch(backend, env, "/healthz").await
    }

    async fn launch(backend: Backend, env: &[(&str, &str)], up: &str) -> Self {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let database_url = fresh_database(backend, data_dir.path()).await;
        let mut server = Self::launch_on(backend, data_dir, database_url, env, up).await;
        server.owner_token = std::fs::read_to_string(server.data_dir.path().join("owner-token"))
            .expect("owner-token written on first start")
            .trim()
            .to_owned();
        server
    }

    /// Starts another `licensing-api` process on this server's database, with its own port,
    /// data directory and clock, as a second process behind a load balancer would run;
    /// `env` is its whole extra environment (say `WORKERS=off`).
    pub async fn another_process(&self, env: &[(&str, &str)]) -> Self {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let mut server = Self::launch_on(self.backend, data_dir, self.database_url.clone(), env, "/readyz").await;
        server.owner_token.clone_from(&self.owner_token);
        server
    }

    async fn launch_on(
        backend: Backend,
        data_dir: tempfile::TempDir,
        database_url: String,
        env: &[(&str, &str)],
        up: &str,
    ) -> Self {
        let port = free_port();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let child = spawn_api(data_dir.path(), &database_url, port, &env);
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
            port,
            env,
        };
        server.wait_until_up(up).await;
        server
    }

    /// Kills the server with SIGKILL (nothing flushed, no shutdown hook) and starts it again on
    /// the same port, data directory and database; waits until it answers.
    pub async fn kill_and_restart(&mut self) {
        self.stop();
        self.child = spawn_api(self.data_dir.path(), &self.database_url, self.port, &self.env);
        self.wait_until_up("/readyz").await;
    }

    async fn wait_until_up(&mut self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("licensing-api exited with {status}:\n{}", self.log());
            }
            if let Ok(res) = self.http.get(format!("{}{path}", self.base_url)).send().await
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

    /// The API process's id (to read its memory from `/proc/<pid>/status`).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The HTTP client.
    #[must_use]
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// POSTs `body` to `/graphql` as it is and returns the answer's bytes, unparsed.
    pub async fn post_raw(&self, token: Option<&str>, body: &Value) -> String {
        let mut req = self.http.post(format!("{}/graphql", self.base_url)).json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.expect("request");
        assert_eq!(res.status(), 200, "GraphQL answers 200");
        res.text().await.expect("body")
    }

    /// The value of one Prometheus sample at `/metrics` (`name{labels}`), 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base_url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body");
        text.lines()
            .find_map(|line| line.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0.0)
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

    /// How many audit events `token`'s vendor has (for "a refused call changed nothing").
    pub async fn audit_count(&self, token: &str) -> i64 {
        self.ok(token, "{ auditEvents(first: 1) { totalCount } }", json!({}))
            .await["auditEvents"]["totalCount"]
            .as_i64()
            .expect("a count")
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
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- server log (tail) ----\n{}", tail(&self.log(), 200));
        }
    }
}

/// The last `lines` lines of a log.
pub(crate) fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The `extensions.code` of the first error, if any.
#[must_use]
pub fn error_code(response: &Value) -> Option<&str> {
    response["errors"][0]["extensions"]["code"].as_str()
}
