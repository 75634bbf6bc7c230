//! `licensing-bench`: the benchmark harness of PERFORMANCE.md. Every result is a ratio to an
//! anchor measured in the same run on the same machine, servers pinned to core 0 and the load
//! generator to core 1, each measurement repeated and interleaved with its anchor, the median
//! reported with how busy the server core was, every response checked:
//!
//! - A1 `validateLicense`, A2 `heartbeat` and M1 (peak RSS) on SQLite ([`device_calls`]),
//!   driven over a fleet of devices made through the API ([`fleet`]);
//! - A3: the same calls on PostgreSQL against the same SQL through pgbench ([`postgres`]);
//! - B1 and B2: `recordUsage` and a usage report import ([`usage`]);
//! - C1: the client's offline check of a license file ([`offline_check`]);
//! - D1 and D3: the heartbeat sweep and the renewal scan ([`sweeps`], which also seeds the
//!   catalog the D scenarios share), D2: the anomaly scan ([`anomaly_scan`]);
//! - W1: webhook fan-out by a real worker against plain HTTP POSTs ([`webhooks`]).
//!
//! Run `cargo build --release --workspace && target/release/licensing-bench --quick`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

mod anomaly_scan;
mod device_calls;
mod fleet;
mod harness;
mod offline_check;
mod postgres;
mod sweeps;
mod usage;
mod webhooks;

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
    /// Internal: W1's plain HTTP client (`PORT:REQUESTS:BODY_FILE`).
    #[arg(long, hide = true)]
    post_anchor: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(addr) = &cli.anchor {
        return device_calls::anchor_server(addr);
    }
    if let Some(spec) = &cli.post_anchor {
        return webhooks::post_anchor(spec);
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
    let (duration, reps, licenses) = if cli.quick {
        (Duration::from_secs(2), 3, 40)
    } else {
        (Duration::from_secs(10), 5, 200)
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let wants = |letter: char| {
            cli.only
                .as_deref()
                .is_none_or(|only| only.to_uppercase().contains(letter))
        };
        if wants('A') || wants('M') {
            device_calls::run(&bin_dir, licenses, cli.connections, duration, reps).await?;
            postgres::run(&bin_dir, licenses, cli.connections, duration, reps).await?;
        }
        if wants('B') {
            usage::run(&bin_dir, cli.quick, cli.connections, duration, reps).await?;
        }
        if wants('C') {
            offline_check::run(cli.quick)?;
        }
        if wants('D') {
            sweeps::run(&bin_dir, cli.quick).await?;
            anomaly_scan::run(&bin_dir, cli.quick).await?;
        }
        if wants('W') {
            webhooks::run(&bin_dir, cli.quick, reps).await?;
        }
        anyhow::Ok(())
    })
}
