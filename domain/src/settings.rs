//! What every server process (`licensing-api`, `licensing-worker`) is configured with, read
//! once from the environment at start-up: where local state lives, the database, the master
//! secret and the clock.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use secrecy::{ExposeSecret, SecretBox};

/// The settings every server process shares.
///
/// | variable | default | meaning |
/// |---|---|---|
/// | `DATA_DIR` | `./data` | embedded database, generated secret, owner token, job queue, mail files |
/// | `DATABASE_URL` | `sqlite://<DATA_DIR>/licensing.db?mode=rwc` | SQLite or `postgres://...` |
/// | `LICENSING_SECRET` | generated into `DATA_DIR/secret` | master secret (>= 32 bytes); required with PostgreSQL |
/// | `LICENSING_ENV` | `development` | `production`: see each process's use (introspection off, webhook targets public `https` only) |
/// | `WEBHOOK_ALLOW_PRIVATE_TARGETS` | `false` | `true`: production webhooks may go to private, loopback and `http` URLs |
/// | `LICENSING_CLOCK_OFFSET_FILE` | unset | tests only: a file holding seconds to add to the clock |
///
/// `DATA_DIR` is created (or tightened to) mode 0700; with [`restrict_new_files`] called at
/// start-up everything in it (databases and their `-wal`/`-shm`, the secret, the owner token,
/// the job queue, mail files) is created 0600.
pub struct Settings {
    /// Where local state lives.
    pub data_dir: PathBuf,
    /// The licensing database.
    pub database_url: String,
    /// The master secret.
    pub secret: SecretBox<Vec<u8>>,
    /// Tests only: a file of seconds added to the clock, so tests can move time.
    pub clock_offset_file: Option<PathBuf>,
    /// Whether this is a production deployment.
    pub production: bool,
    /// Where webhook deliveries may go.
    pub webhook_targets: crate::webhooks::targets::TargetRules,
}

/// Makes every file and directory this process creates from now on private to its user
/// (umask 0077). The server binaries call it first thing, before any file exists.
pub fn restrict_new_files() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Creates `DATA_DIR` with mode 0700, or tightens an existing one to it.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating DATA_DIR {}", dir.display()))?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0
        && let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    {
        tracing::warn!(dir = %dir.display(), error = %e, "DATA_DIR is readable by others and could not be made private");
    }
    Ok(())
}

/// A set, non-blank environment variable.
#[must_use]
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Settings {
    /// Reads the environment, creating `DATA_DIR` and a generated secret when needed.
    ///
    /// # Errors
    /// When `DATA_DIR` cannot be created, PostgreSQL is used without `LICENSING_SECRET`, or
    /// `LICENSING_ENV` / `WEBHOOK_ALLOW_PRIVATE_TARGETS` has an unknown value.
    pub fn from_env() -> anyhow::Result<Self> {
        let production = match env("LICENSING_ENV").as_deref() {
            None | Some("development") => false,
            Some("production") => true,
            Some(other) => bail!("LICENSING_ENV must be development or production, not {other:?}"),
        };
        let allow_private_targets = match env("WEBHOOK_ALLOW_PRIVATE_TARGETS").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => bail!("WEBHOOK_ALLOW_PRIVATE_TARGETS must be true or false, not {other:?}"),
        };
        let data_dir = PathBuf::from(env("DATA_DIR").unwrap_or_else(|| "./data".into()));
        private_dir(&data_dir)?;
        let database_url =
            env("DATABASE_URL").unwrap_or_else(|| format!("sqlite://{}/licensing.db?mode=rwc", data_dir.display()));
        let secret = match env("LICENSING_SECRET") {
            Some(secret) => secret.into_bytes(),
            None if database_url.starts_with("postgres") => {
                bail!("LICENSING_SECRET is required with PostgreSQL: every API and worker process must share it")
            }
            None => generated_secret(&data_dir)?,
        };
        Ok(Self {
            data_dir,
            database_url,
            secret: SecretBox::new(Box::new(secret)),
            clock_offset_file: env("LICENSING_CLOCK_OFFSET_FILE").map(PathBuf::from),
            production,
            webhook_targets: crate::webhooks::targets::TargetRules::for_deployment(production, allow_private_targets),
        })
    }

    /// The master secret's derived keys.
    ///
    /// # Errors
    /// When the secret is shorter than 32 bytes.
    pub fn master_secret(&self) -> anyhow::Result<crate::MasterSecret> {
        crate::MasterSecret::new(self.secret.expose_secret()).context("LICENSING_SECRET")
    }

    /// The clock: the system's, or moved by the offset file in tests.
    #[must_use]
    pub fn clock(&self) -> crate::Clock {
        self.clock_offset_file
            .clone()
            .map_or(crate::Clock::System, crate::Clock::OffsetFile)
    }

    /// Connects to the database, applies pending migrations, and builds the domain handle.
    ///
    /// # Errors
    /// When the database cannot be reached or migrated, or the secret is too short.
    pub async fn open_domain(&self) -> anyhow::Result<crate::Domain> {
        let pools = crate::db::connect(&self.database_url)
            .await
            .context("connecting to DATABASE_URL")?;
        crate::db::migrate(&pools.write).await.context("applying migrations")?;
        let mut domain = crate::Domain::new(pools, self.master_secret()?, self.clock());
        domain.webhook_targets = self.webhook_targets;
        Ok(domain)
    }
}

/// Reads `DATA_DIR/secret`, creating it (mode 0600, 32 random bytes in hex) on first start.
fn generated_secret(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join("secret");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(existing.trim().as_bytes().to_vec());
    }
    let secret = hex_secret();
    write_private(&path, &secret)?;
    Ok(secret.into_bytes())
}

fn hex_secret() -> String {
    hex::encode(crate::secrets::random_bytes::<32>())
}

/// Writes `contents` to a new file readable only by its owner (mode 0600).
///
/// # Errors
/// IO errors.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}
