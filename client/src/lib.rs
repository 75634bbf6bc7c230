//! The licensing client: the library a vendor embeds in their software, and what the
//! `licensing-client` CLI runs.
//!
//! A [`Client`] owns a state directory ([`state`]) holding the device key, the installed
//! license file, the usage ledger and the newest time seen. It activates online or through
//! files (activation request in, license file back), validates offline ([`check()`]: signature
//! with the vendor's key, fingerprint with the policy's k-of-n rule, expiry, entitlements,
//! `refresh_by` plus grace, and the clock never earlier than a time already seen), heartbeats
//! and refreshes, records usage in its signed ledger, and gives its seat back online or with a
//! deactivation file.
//!
//! This file holds the [`Client`] itself, its [`Options`] and [`ClientError`]; each concern
//! adds its methods in its own module: `check` (the offline check, no IO), `install` (what is
//! installed, the install history, giving a seat back), `ledger` (usage), `offline_files`
//! (activation request and deactivation file), `session` (the online calls, over [`online`]
//! and the typed documents of `operations`).

mod check;
pub mod detect;
mod install;
mod ledger;
mod offline_files;
pub mod online;
mod operations;
mod session;
pub mod state;

use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::VerifyingKey;
use protocol::fingerprint::Components;

pub use crate::check::{CLOCK_TOLERANCE_SECONDS, Status, StatusCode, check, vendor_keys};
pub use crate::session::HeartbeatReport;
use crate::state::State;

/// What went wrong in a client operation (as opposed to a license that is not valid, which
/// is a [`Status`]).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The operation was refused; the message says why and what to do.
    #[error("{0}")]
    Refused(String),
    /// The server answered with an error.
    #[error("the server refused: {message} ({code})")]
    Server {
        /// The error code (`ACTIVATION_LIMIT_REACHED`...).
        code: String,
        /// Its message.
        message: String,
    },
    /// The server could not be reached.
    #[error("could not reach the licensing server: {0}")]
    Network(String),
    /// The state directory could not be read or written.
    #[error("state directory: {0}")]
    State(String),
}

/// How the client is set up.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The vendor's public keys ([`vendor_keys()`]); needed to install or check license files.
    pub vendor_keys: Vec<VerifyingKey>,
    /// Fingerprint components to use instead of detecting them ([`detect::components`]).
    pub components: Option<Components>,
    /// Added to the system clock (tests; equivalent to changing the system clock, which the
    /// clock checks handle).
    pub clock_offset: Duration,
}

/// The client over one state directory.
pub struct Client {
    state: State,
    options: Options,
    components: Components,
}

impl Client {
    /// Opens the state directory (creating it, private) and detects this machine's components
    /// unless `options` gives them.
    ///
    /// # Errors
    /// [`ClientError::State`] when the directory cannot be used; [`ClientError::Refused`] when
    /// no component can be detected.
    pub fn open(state_dir: impl Into<std::path::PathBuf>, options: Options) -> Result<Self, ClientError> {
        let state = State::open(state_dir)?;
        let components = options.components.clone().unwrap_or_else(detect::components);
        if components.is_empty() {
            return Err(ClientError::Refused(
                "no fingerprint component could be detected on this machine: pass --components name=value,...".into(),
            ));
        }
        Ok(Self {
            state,
            options,
            components,
        })
    }

    /// This machine's fingerprint components.
    #[must_use]
    pub fn components(&self) -> &Components {
        &self.components
    }

    /// The state directory.
    #[must_use]
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The clock, with the test offset of [`Options::clock_offset`].
    pub(crate) fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.options.clock_offset
    }

    /// The vendor's keys, refused when none was given.
    pub(crate) fn keys(&self) -> Result<&[VerifyingKey], ClientError> {
        if self.options.vendor_keys.is_empty() {
            return Err(ClientError::Refused(
                "the vendor's public key is needed to check license files: pass --public-key FILE".into(),
            ));
        }
        Ok(&self.options.vendor_keys)
    }

    /// The newest time seen: the clock file, and the last ledger record.
    pub(crate) fn newest_seen(&self, device_id: Option<&str>) -> Result<Option<DateTime<Utc>>, ClientError> {
        let ledger_last = match device_id {
            Some(id) => self.state.ledger(id)?.last().map(|r| r.recorded_at),
            None => None,
        };
        Ok(self.state.newest_seen()?.max(ledger_last))
    }
}
