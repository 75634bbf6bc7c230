//! A3: `validateLicense` and `heartbeat` (alternating, one to one) through the real
//! `licensing-api` on PostgreSQL, against the same SQL driven by `pgbench` on the same rows in
//! the same run.
//!
//! The bench starts its own throwaway PostgreSQL (`initdb` into a temporary directory, as the
//! `postgres` user when run as root, like `scripts/test.sh`), pinned to the server core with
//! the API, durable as shipped (`fsync` and `synchronous_commit` on). The fleet is made through
//! the API; the anchor is then one pgbench script pair per license with that license's ids and
//! key lookup written in:
//!
//! - validate: the license joined with its policy by key lookup, then the device by license and
//!   fingerprint (what a validation reads);
//! - heartbeat: the license by id, then the conditional `UPDATE devices ... RETURNING *` that
//!   records a live device's heartbeat (what a heartbeat writes).
//!
//! pgbench runs with [`PGBENCH_CLIENTS`] clients and prepared statements from the load core.
//! The server side's busy time is the API plus every PostgreSQL process (children included).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};

use crate::fleet::{self, DEVICES_PER_LICENSE};
use crate::harness::{Load, drive, drive_measured, free_port, launch_api, least_percent, median, report, rotating};

/// pgbench clients (PERFORMANCE.md's anchor table was measured with 8).
const PGBENCH_CLIENTS: usize = 8;

/// A throwaway PostgreSQL server, stopped and deleted when dropped.
struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_root: bool,
}

impl Postgres {
    /// `initdb` and start a server on a free loopback port, pinned to core 0.
    fn start() -> anyhow::Result<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .context("PostgreSQL is not installed (scripts/test.sh installs it)")?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("pg_ctl").exists())
            .max_by_key(|bin| {
                bin.parent()
                    .and_then(|v| v.file_name())
                    .and_then(|v| v.to_str())
                    .and_then(|v| v.parse::<u32>().ok())
                    .unwrap_or(0)
            })
            .context("no /usr/lib/postgresql/<version>/bin/pg_ctl")?;
        let dir = tempfile::tempdir()?;
        let as_root = running_as_root();
        let pg = Self {
            bin,
            dir,
            port: free_port()?,
            as_root,
        };
        if as_root {
            run_command(Command::new("chown").arg("postgres").arg(pg.dir.path()))
                .context("initdb refuses root: the postgres user must exist (scripts/test.sh creates it)")?;
        }
        let data = pg.dir.path().join("data");
        run_command(
            pg.command("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"]),
        )?;
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=100",
            pg.port,
            pg.dir.path().display()
        );
        let mut start = Command::new("taskset");
        start.args(["-c", "0"]);
        if as_root {
            start.args(["runuser", "-u", "postgres", "--"]);
        }
        start
            .arg(pg.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(pg.dir.path().join("log"))
            .args(["-w", "-o", &options, "start"]);
        run_command(&mut start)?;
        Ok(pg)
    }

    /// A PostgreSQL program, run as the `postgres` user when we are root.
    fn command(&self, program: &str) -> Command {
        if self.as_root {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(self.bin.join(program));
            cmd
        } else {
            Command::new(self.bin.join(program))
        }
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The postmaster's pid.
    fn postmaster(&self) -> anyhow::Result<u32> {
        let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))?;
        Ok(pid.lines().next().unwrap_or_default().trim().parse()?)
    }

    /// CPU seconds of the server: the postmaster, the children it reaped and the live ones.
    fn cpu_seconds(&self) -> f64 {
        let Ok(postmaster) = self.postmaster() else { return 0.0 };
        let fields = |pid: &str| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit(')')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .map(|f| f.parse::<f64>().unwrap_or(0.0))
                .collect::<Vec<_>>()
        };
        let ticks = |f: &[f64], range: std::ops::Range<usize>| f.get(range).map_or(0.0, |t| t.iter().sum::<f64>());
        let own = fields(&postmaster.to_string());
        let mut total = ticks(&own, 11..15);
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
                continue;
            };
            let f = fields(pid);
            if f.get(1).is_some_and(|ppid| *ppid == f64::from(postmaster)) {
                total += ticks(&f, 11..13);
            }
        }
        total / 100.0
    }

    /// Runs pgbench for `duration` over `scripts`: transactions per second.
    fn pgbench(&self, scripts: &[PathBuf], duration: Duration) -> anyhow::Result<f64> {
        // A client: it runs as us (it reads our scripts), only the server runs as `postgres`.
        let mut cmd = Command::new(self.bin.join("pgbench"));
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-n",
            "-M",
            "prepared",
        ])
        .args(["-c", &PGBENCH_CLIENTS.to_string(), "-j", "1"])
        .args(["-T", &duration.as_secs().max(1).to_string()]);
        for script in scripts {
            cmd.arg("-f").arg(format!("{}@1", script.display()));
        }
        cmd.arg("bench");
        let output = cmd.stderr(Stdio::piped()).output().context("running pgbench")?;
        let text = String::from_utf8_lossy(&output.stdout);
        ensure!(
            output.status.success(),
            "pgbench failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        if let Some(failed) = text.lines().find(|l| l.starts_with("number of failed transactions:")) {
            ensure!(failed.contains(": 0 "), "pgbench: {failed}");
        }
        text.lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|tps| tps.parse().ok())
            .with_context(|| format!("no tps in pgbench's output: {text}"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run_command(cmd: &mut Command) -> anyhow::Result<()> {
    let output = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !output.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// One validate and one heartbeat pgbench script per license, from the rows the API wrote.
async fn anchor_scripts(url: &str, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let db = Database::connect(url).await?;
    let licenses = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT l.id, l.key_lookup, l.vendor_id, \
             (SELECT min(fingerprint) FROM devices d WHERE d.license_id = l.id) AS fingerprint \
             FROM licenses l ORDER BY l.id",
        ))
        .await?;
    let mut scripts = Vec::new();
    for (i, row) in licenses.iter().enumerate() {
        let (id, lookup, vendor, fingerprint): (String, String, String, Option<String>) =
            row.try_get_many_by_index()?;
        // The fleet names devices `b<license>-<device>`: the script picks one at random.
        let prefix = fingerprint
            .as_deref()
            .and_then(|f| f.rsplit_once('-'))
            .map(|(prefix, _)| format!("{prefix}-"))
            .context("a license without devices")?;
        let pick = format!("\\set d random(0, {})\n", DEVICES_PER_LICENSE - 1);
        let validate = format!(
            "{pick}SELECT l.*, p.* FROM licenses l JOIN policies p ON p.id = l.policy_id WHERE l.key_lookup = '{lookup}';\n\
             SELECT * FROM devices WHERE license_id = '{id}' AND fingerprint = '{prefix}' || :d;\n"
        );
        let heartbeat = format!(
            "{pick}SELECT * FROM licenses WHERE id = '{id}' AND vendor_id = '{vendor}';\n\
             UPDATE devices SET last_seen_at = now(), heartbeat_deadline_at = now() + interval '3600 seconds', updated_at = now() \
             WHERE license_id = '{id}' AND fingerprint = '{prefix}' || :d AND vendor_id = '{vendor}' AND status = 'ACTIVE' \
             AND holds_seat AND (heartbeat_deadline_at IS NULL OR heartbeat_deadline_at >= now()) RETURNING *;\n"
        );
        for (kind, text) in [("validate", validate), ("heartbeat", heartbeat)] {
            let path = dir.join(format!("{kind}-{i}.sql"));
            std::fs::write(&path, text)?;
            scripts.push(path);
        }
    }
    db.close().await?;
    ensure!(!scripts.is_empty(), "the fleet has no licenses");
    Ok(scripts)
}

/// Runs A3 and prints its line.
pub async fn run(
    bin_dir: &Path,
    licenses: usize,
    connections: usize,
    duration: Duration,
    reps: usize,
) -> anyhow::Result<()> {
    let pg = Postgres::start().context("starting PostgreSQL for A3")?;
    run_command(Command::new(pg.bin.join("createdb")).args([
        "-h",
        "127.0.0.1",
        "-p",
        &pg.port.to_string(),
        "-U",
        "postgres",
        "bench",
    ]))?;
    let dir = tempfile::tempdir()?;
    let (mut api, port, token) =
        launch_api(bin_dir, dir.path(), "embedded", &[("DATABASE_URL", pg.url("bench"))]).await?;
    let fleet = fleet::seed(port, &token, licenses).await?;
    let scripts = anchor_scripts(&pg.url("bench"), dir.path()).await?;
    // Alternating: validate one device, heartbeat the next.
    let requests = fleet
        .validations()
        .into_iter()
        .zip(fleet.heartbeats()?)
        .flat_map(|(v, h)| [v, h])
        .collect();
    let ours = Load {
        port,
        path: "/graphql",
        request: rotating(requests),
        check: |v| v["data"]["validateLicense"]["valid"] == true || v["data"]["heartbeat"]["updateAvailable"] == false,
    };
    drive(&ours, connections, Duration::from_millis(500)).await?;
    pg.pgbench(&scripts, Duration::from_secs(1))?;
    let (mut ours_rates, mut anchor_rates, mut ours_busy, mut anchor_busy) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let pg_cpu = pg.cpu_seconds();
        let api_cpu = crate::harness::cpu_seconds(&[api.pid()]);
        let started = std::time::Instant::now();
        let (rate, _) = drive_measured(&ours, &[api.pid()], connections, duration).await?;
        let cpu = pg.cpu_seconds() - pg_cpu + crate::harness::cpu_seconds(&[api.pid()]) - api_cpu;
        ours_busy.push(cpu / started.elapsed().as_secs_f64());
        ours_rates.push(rate);
        let pg_cpu = pg.cpu_seconds();
        let started = std::time::Instant::now();
        anchor_rates.push(pg.pgbench(&scripts, duration)?);
        anchor_busy.push((pg.cpu_seconds() - pg_cpu) / started.elapsed().as_secs_f64());
    }
    api.dir = Some(dir);
    report(
        "A3",
        median(ours_rates),
        median(anchor_rates),
        0.50,
        &format!(
            " [validate + heartbeat/s through the API vs the same SQL through pgbench ({PGBENCH_CLIENTS} clients), PostgreSQL; median of {reps} interleaved; server core busy: anchor >= {:.0}%, ours >= {:.0}%; {} devices]",
            least_percent(&anchor_busy),
            least_percent(&ours_busy),
            fleet.devices.len()
        ),
    );
    drop(api);
    Ok(())
}
