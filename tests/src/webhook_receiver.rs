//! A real HTTP receiver for the webhook tests: [`WebhookReceiver`] runs
//! `tests/support/webhook_receiver.py` (aiohttp, from the localstripe venv) on a free loopback
//! port. Each named hook logs every delivery on arrival, checks its `Licensing-Signature` with
//! Python's own `hmac` (an implementation independent of ours), and answers as configured:
//! failing the first N, one status always, or slowly.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::{free_port, tail};

/// The receiver process and its port.
pub struct WebhookReceiver {
    child: Child,
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl WebhookReceiver {
    /// Starts a receiver and waits until it answers.
    #[must_use]
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("webhook_receiver.py");
        std::fs::write(&script, include_str!("../support/webhook_receiver.py")).unwrap();
        let log = std::fs::File::create(dir.path().join("receiver.log")).unwrap();
        let python = crate::server::test_tool(
            "LICENSING_TEST_LOCALSTRIPE_PYTHON",
            "licensing-tests/localstripe/bin/python",
        );
        let port = free_port();
        let mut child = Command::new(&python)
            .arg(&script)
            .arg(port.to_string())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("start {} (scripts/test.sh installs it): {e}", python.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the webhook receiver exited with {status}");
            }
            assert!(Instant::now() < deadline, "the webhook receiver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self { child, port, dir, http }
    }

    /// The URL of hook `name`.
    #[must_use]
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/hooks/{name}", self.port)
    }

    /// Configures hook `name` (merged into what it had): `{"secret", "fail_first", "status",
    /// "delay"}`.
    pub async fn configure(&self, name: &str, config: Value) {
        let url = format!("http://127.0.0.1:{}/_config/{name}", self.port);
        let res = self.http.put(url).json(&config).send().await.unwrap();
        assert!(res.status().is_success(), "configure {name}: {}", res.status());
    }

    /// Every delivery hook `name` received, oldest first: `{"event_id", "event_type",
    /// "signature", "verified", "body", "arrived", "answered", "finished"}`.
    pub async fn received(&self, name: &str) -> Vec<Value> {
        let url = format!("http://127.0.0.1:{}/_log/{name}", self.port);
        self.http.get(url).send().await.unwrap().json().await.unwrap()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("receiver.log")).unwrap_or_default();
            eprintln!("---- webhook receiver log (tail) ----\n{}", tail(&log, 100));
        }
    }
}
