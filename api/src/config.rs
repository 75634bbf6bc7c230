//! Configuration of `licensing-api`, read once from the environment at start-up: the shared
//! [`Settings`] plus what only the API process needs.

use anyhow::bail;
pub use domain::settings::{Settings, env, write_private};
use secrecy::SecretString;

/// Everything the API process is configured with.
///
/// | variable | default | meaning |
/// |---|---|---|
/// | (shared) | | `DATA_DIR`, `DATABASE_URL`, `LICENSING_SECRET`: see [`Settings`] |
/// | `LISTEN_ADDR` | `127.0.0.1:8080` | API address |
/// | `LICENSING_ENV` | `development` | `production` turns introspection and suggestions off |
/// | `REDIS_URL` | unset | live alerts come from the Redis channel the workers publish on |
/// | `WORKERS` | `embedded` | `embedded`: this process also runs the job workers; `off`: run `licensing-worker` |
/// | `STRIPE_WEBHOOK_SECRET` | unset | verifies `/webhooks/stripe`; unset = billing webhooks are refused (503) |
/// | `TRUSTED_PROXIES` | unset | comma-separated IPs/CIDRs of reverse proxies whose `X-Forwarded-For` names the client (the right-most entry not itself trusted); unset = the socket's peer is the client |
/// | `TOKEN_USAGE_FLUSH_SECS` | `30` | how often API token last-use times are written (`apiTokens { lastUsedAt }`) |
/// | `RUST_LOG` | `info,sqlx=warn` | log filter |
pub struct Config {
    /// What every server process shares.
    pub settings: Settings,
    /// Address to listen on.
    pub listen_addr: String,
    /// Whether this is a production deployment.
    pub production: bool,
    /// Whether the job workers run inside this process.
    pub embedded_workers: bool,
    /// Redis, when the workers publish live alerts there.
    pub redis_url: Option<String>,
    /// The Stripe webhook signing secret.
    pub stripe_webhook_secret: Option<SecretString>,
    /// The reverse proxies trusted to say who the client is.
    pub trusted_proxies: crate::proxies::TrustedProxies,
    /// How often API token last-use times are written.
    pub token_usage_flush: std::time::Duration,
}

impl Config {
    /// Reads the environment.
    ///
    /// # Errors
    /// As [`Settings::from_env`]; an unknown `WORKERS`; a `TRUSTED_PROXIES`
    /// entry that is not an IP address or CIDR network; a bad `TOKEN_USAGE_FLUSH_SECS`.
    pub fn from_env() -> anyhow::Result<Self> {
        let embedded_workers = match env("WORKERS").as_deref() {
            None | Some("embedded") => true,
            Some("off") => false,
            Some(other) => bail!("WORKERS must be embedded or off, not {other:?}"),
        };
        let trusted_proxies = crate::proxies::TrustedProxies::parse(&env("TRUSTED_PROXIES").unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("TRUSTED_PROXIES: {e}"))?;
        let settings = Settings::from_env()?;
        Ok(Self {
            production: settings.production,
            settings,
            listen_addr: env("LISTEN_ADDR").unwrap_or_else(|| "127.0.0.1:8080".into()),
            embedded_workers,
            redis_url: env("REDIS_URL"),
            stripe_webhook_secret: env("STRIPE_WEBHOOK_SECRET").map(SecretString::from),
            trusted_proxies,
            token_usage_flush: std::time::Duration::from_secs(match env("TOKEN_USAGE_FLUSH_SECS") {
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(secs) if secs >= 1 => secs,
                    _ => bail!("TOKEN_USAGE_FLUSH_SECS must be a number of seconds, at least 1"),
                },
                None => 30,
            }),
        })
    }
}
