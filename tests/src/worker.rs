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

/// The queue the workers use: SQLite next to SQLite, Redis next to PostgreSQL (the scale-out
/// path). Keep the returned server alive for the test.
#[must_use]
pub fn worker_queue(backend: crate::Backend) -> (Option<crate::RedisServer>, Vec<(String, String)>) {
    match backend {
        crate::Backend::Sqlite => (None, Vec::new()),
        crate::Backend::Postgres => {
            let redis = crate::RedisServer::start();
            let env = vec![("REDIS_URL".to_owned(), redis.url.clone())];
            (Some(redis), env)
        }
    }
}

/// A `licensing-worker` on `queue` (from [`worker_queue`]) with `extra` settings.
#[must_use]
pub fn worker_on(server: &TestServer, queue: &[(String, String)], extra: &[(&str, &str)]) -> WorkerProcess {
    let mut env: Vec<(&str, &str)> = queue.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend_from_slice(extra);
    server.start_worker(&env)
}

/// The runs of a worker task (`heartbeat_sweep`, `renewal_scan`, `anomaly_scan`,
/// `outbox_relay`) counted in `worker_ticks`: (started, finished).
pub async fn worker_runs(db: &sea_orm::DatabaseConnection, task: &str) -> (i64, i64) {
    use sea_orm::ConnectionTrait as _;
    use sea_orm::sea_query::{Expr, ExprTrait as _, Query};
    let query = Query::select()
        .columns(["started", "runs"])
        .from("worker_ticks")
        .and_where(Expr::col("task").eq(task))
        .to_owned();
    db.query_one(&query).await.unwrap().map_or((0, 0), |row| {
        (row.try_get("", "started").unwrap(), row.try_get("", "runs").unwrap())
    })
}

/// Waits (up to a minute) until two runs of `task` have finished that started after this
/// call. Every run counts itself as started before it works, so once the finished runs reach
/// the started runs read here plus two, at least two of them began later, whichever worker
/// process ran them. A test that then sees nothing more happen saw two full runs do nothing,
/// not a stalled worker.
pub async fn two_more_runs(server: &TestServer, task: &str) {
    let db = server.database().await;
    let (started, _) = worker_runs(&db, task).await;
    crate::eventually(Duration::from_secs(60), &format!("two more {task} runs"), || async {
        (worker_runs(&db, task).await.1 >= started + 2).then_some(())
    })
    .await;
}
