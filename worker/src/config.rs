//! What the workers are configured with from the environment ([`WorkerConfig::from_env`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use domain::settings::{Settings, env};
use secrecy::SecretString;

/// What the workers are configured with, besides the shared [`Settings`].
///
/// | variable | default | meaning |
/// |---|---|---|
/// | `REDIS_URL` | unset | the job queue on Redis instead of `DATA_DIR/jobs.db` |
/// | `SMTP_URL` | unset | `smtp://host:port`; unset = `.eml` files in `DATA_DIR/outbox/` |
/// | `MAIL_FROM` | `licensing@localhost` | sender |
/// | `HEARTBEAT_SWEEP_SECS` | `30` | heartbeat-timeout detection (and alert digests) period |
/// | `RENEWAL_SCAN_SECS` | `3600` | renewal notice period |
/// | `RENEWAL_NOTICE_DAYS` | `30,7,1` | days before expiry a notice goes out |
/// | `ANOMALY_SCAN_SECS` | `300` | anomaly detection period (the anomaly scan) |
/// | `STRIPE_API_BASE` | `https://api.stripe.com` | the billing API |
/// | `STRIPE_SECRET_KEY` | unset | the billing API key; unset = billing sync is off |
/// | `BILLING_SYNC_SECS` | `900` | subscription reconciliation period |
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Where the SQLite queue and `.eml` files live.
    pub data_dir: PathBuf,
    /// Redis, when the queue runs there.
    pub redis_url: Option<String>,
    /// The SMTP server, when mail goes out by SMTP.
    pub smtp_url: Option<String>,
    /// Sender address.
    pub mail_from: String,
    /// Heartbeat sweep period.
    pub heartbeat_sweep: Duration,
    /// Renewal scan period.
    pub renewal_scan: Duration,
    /// Anomaly scan period.
    pub anomaly_scan: Duration,
    /// Renewal notice thresholds, in days.
    pub renewal_notice_days: Vec<i64>,
    /// The billing API base URL.
    pub stripe_api_base: String,
    /// The billing API key; `None` = billing sync is off.
    pub stripe_secret_key: Option<SecretString>,
    /// Reconciliation period.
    pub billing_sync: Duration,
}

/// A period in whole seconds from variable `name`, at least 1.
fn seconds(name: &str, default: u64) -> anyhow::Result<Duration> {
    let value = match env(name) {
        Some(v) => v
            .trim()
            .parse::<u64>()
            .with_context(|| format!("{name} must be a number of seconds"))?,
        None => default,
    };
    anyhow::ensure!(value >= 1, "{name} must be at least 1");
    Ok(Duration::from_secs(value))
}

impl WorkerConfig {
    /// Reads the environment.
    ///
    /// # Errors
    /// A period or threshold that is not a positive number.
    pub fn from_env(settings: &Settings) -> anyhow::Result<Self> {
        let renewal_notice_days = env("RENEWAL_NOTICE_DAYS")
            .unwrap_or_else(|| "30,7,1".into())
            .split(',')
            .filter(|d| !d.trim().is_empty())
            .map(|d| {
                d.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|d| (1..=3650).contains(d))
                    .with_context(|| format!("RENEWAL_NOTICE_DAYS: {d:?} is not a number of days (1-3650)"))
            })
            .collect::<anyhow::Result<Vec<i64>>>()?;
        Ok(Self {
            data_dir: settings.data_dir.clone(),
            redis_url: env("REDIS_URL"),
            smtp_url: env("SMTP_URL"),
            mail_from: env("MAIL_FROM").unwrap_or_else(|| "licensing@localhost".into()),
            heartbeat_sweep: seconds("HEARTBEAT_SWEEP_SECS", 30)?,
            renewal_scan: seconds("RENEWAL_SCAN_SECS", 3600)?,
            anomaly_scan: seconds("ANOMALY_SCAN_SECS", 300)?,
            renewal_notice_days,
            stripe_api_base: env("STRIPE_API_BASE").unwrap_or_else(|| "https://api.stripe.com".into()),
            stripe_secret_key: env("STRIPE_SECRET_KEY").map(SecretString::from),
            billing_sync: seconds("BILLING_SYNC_SECS", 900)?,
        })
    }
}
