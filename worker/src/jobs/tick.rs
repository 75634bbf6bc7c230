//! The periodic tick job (`licensing.periodic`): one job per tick of each periodic task, the
//! heartbeat sweep followed by the staff alert digests, the renewal scan, or the anomaly scan. Every process
//! schedules every tick (`scheduler`) under the idempotency key `<task>:<slot>`, so
//! the queue keeps one job per tick however many workers run; the work itself is idempotent
//! too (conditional updates, claims, dedupe keys), so a tick delivered twice changes nothing
//! twice. Each run counts itself in `worker_ticks` when it starts and when it has finished.

use apalis::prelude::BoxDynError;
use serde::{Deserialize, Serialize};

use super::{Job, Shared};

/// A periodic task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeriodicTask {
    /// Mark devices past their heartbeat deadline dead, then send the alert digests.
    HeartbeatSweep,
    /// Promise renewal notices.
    RenewalScan,
    /// Run the anomaly detectors over what changed since the last scan.
    AnomalyScan,
}

impl PeriodicTask {
    /// The task's row in `worker_ticks`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::HeartbeatSweep => "heartbeat_sweep",
            Self::RenewalScan => "renewal_scan",
            Self::AnomalyScan => "anomaly_scan",
        }
    }
}

/// One tick of a periodic task: `slot` is the tick's number (Unix time / period).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tick {
    /// Which task.
    pub task: PeriodicTask,
    /// Which tick.
    pub slot: u64,
}

impl Job for Tick {
    const QUEUE: &'static str = "licensing.periodic";
}

/// Runs one tick. A run is counted as started before any work, so "runs finished" minus
/// "runs started earlier" is always a run that started later.
pub(crate) async fn run(tick: Tick, ctx: Shared) -> Result<(), BoxDynError> {
    let name = tick.task.name();
    ctx.domain.worker_tick_started(name).await?;
    match tick.task {
        PeriodicTask::HeartbeatSweep => {
            let died = ctx.domain.sweep_dead_devices().await?;
            let digests = ctx.domain.send_alert_digests().await?;
            if died > 0 || digests > 0 {
                tracing::info!(died, digests, slot = tick.slot, "heartbeat sweep");
            }
        }
        PeriodicTask::RenewalScan => {
            let notices = ctx
                .domain
                .promise_renewal_notices(&ctx.config.renewal_notice_days)
                .await?;
            if notices > 0 {
                tracing::info!(notices, slot = tick.slot, "renewal notices promised");
            }
        }
        PeriodicTask::AnomalyScan => {
            let report = ctx.domain.scan_anomalies().await?;
            if report.opened > 0 || report.repeated > 0 {
                tracing::info!(
                    opened = report.opened,
                    repeated = report.repeated,
                    series = report.series,
                    slot = tick.slot,
                    "anomaly scan"
                );
            }
        }
    }
    ctx.domain.worker_tick_finished(name, i64::try_from(tick.slot)?).await?;
    Ok(())
}
