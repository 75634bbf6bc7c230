//! The real `licensing-worker` binary started next to a [`TestServer`], sharing its database,
//! secret, data directory and clock.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::TestServer;
use crate::server::{service_command, tail};

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
        let mut command = service_command("licensing-worker", self.data_dir.path(), &self.database_url, &log);
        for (k, v) in env {
            command.env(k, v);
        }
        WorkerProcess {
            child: command.spawn().expect("spawn licensing-worker"),
            log,
        }
    }
}
