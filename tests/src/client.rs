//! The real `licensing-client` binary driven as a customer's machine would run it.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::{TestServer, binary};

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
