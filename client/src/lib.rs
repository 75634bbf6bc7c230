//! The licensing client: the library a vendor embeds in their software, and what the
//! `licensing-client` CLI runs.
//!
//! A [`Client`] owns a state directory ([`state`]) holding the device key, the installed
//! license file, the usage ledger and the newest time seen. It activates online or through
//! files (activation request in, license file back), validates offline ([`check`]: signature
//! with the vendor's key, fingerprint with the policy's k-of-n rule, expiry, entitlements,
//! `refresh_by` plus grace, and the clock never earlier than a time already seen), heartbeats
//! and refreshes, records usage in its signed ledger, and gives its seat back online or with a
//! deactivation file.

pub mod detect;
pub mod online;
pub mod state;

use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::VerifyingKey;
use protocol::fingerprint::{self, Components};
use protocol::ledger::{self, LedgerRecord};
use protocol::license_file::{self, LicensePayload};
use protocol::offline::{self, ActivationRequest, DeactivationFile, UsageReport};
use protocol::validation::{self, ValidationCode, check_fingerprint};
use serde::Serialize;
use serde_json::json;

use crate::online::Server;
use crate::state::{FileMark, GivenBack, Session, State};

/// How far the clock may read earlier than a time already seen before it counts as moved
/// back (clock corrections, a server a little ahead).
pub const CLOCK_TOLERANCE_SECONDS: i64 = 300;

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

/// The outcome of an offline check, stable as JSON (`status --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StatusCode {
    /// Valid on this machine now.
    Valid,
    /// No license is installed (never activated, or deactivated).
    NotActivated,
    /// The installed file does not verify with the vendor's key.
    InvalidFile,
    /// The clock reads earlier than a time this installation has already seen.
    ClockTamper,
    /// Past the license's expiry.
    Expired,
    /// Suspended by the vendor.
    Suspended,
    /// Revoked by the vendor.
    Revoked,
    /// Not the machine the file is bound to.
    FingerprintMismatch,
    /// A required entitlement is not granted.
    EntitlementMissing,
    /// Not refreshed in time and the grace period is over, or the check-out ended.
    HeartbeatDead,
}

impl From<ValidationCode> for StatusCode {
    fn from(code: ValidationCode) -> Self {
        match code {
            ValidationCode::Valid => Self::Valid,
            ValidationCode::NotFound | ValidationCode::NotActivated => Self::NotActivated,
            ValidationCode::Expired => Self::Expired,
            ValidationCode::Suspended => Self::Suspended,
            ValidationCode::Revoked => Self::Revoked,
            ValidationCode::FingerprintMismatch => Self::FingerprintMismatch,
            ValidationCode::EntitlementMissing => Self::EntitlementMissing,
            ValidationCode::HeartbeatDead => Self::HeartbeatDead,
        }
    }
}

/// What the installed license says, and whether it is valid here and now.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Whether the software may run.
    pub valid: bool,
    /// Why (or why not).
    pub code: StatusCode,
    /// A sentence a person can act on.
    pub detail: String,
    /// The license.
    pub license_id: Option<String>,
    /// This device, as the server knows it.
    pub device_id: Option<String>,
    /// The product code.
    pub product: Option<String>,
    /// Granted entitlements.
    pub entitlements: Vec<String>,
    /// License expiry (null = perpetual).
    pub expires_at: Option<DateTime<Utc>>,
    /// When the file should be refreshed.
    pub refresh_by: Option<DateTime<Utc>>,
    /// Until when it keeps working offline: `refresh_by` plus grace, or the end of the check-out.
    pub works_offline_until: Option<DateTime<Utc>>,
    /// Past `refresh_by` but inside the grace period.
    pub in_grace: bool,
    /// End of a check-out.
    pub checked_out_until: Option<DateTime<Utc>>,
    /// The license version the file reflects.
    pub version: Option<i64>,
}

impl Status {
    fn without_file(code: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            valid: false,
            code,
            detail: detail.into(),
            license_id: None,
            device_id: None,
            product: None,
            entitlements: Vec::new(),
            expires_at: None,
            refresh_by: None,
            works_offline_until: None,
            in_grace: false,
            checked_out_until: None,
            version: None,
        }
    }

    fn of(payload: &LicensePayload, code: StatusCode, detail: String, now: DateTime<Utc>) -> Self {
        let works_until = works_offline_until(payload);
        Self {
            valid: code == StatusCode::Valid,
            code,
            detail,
            license_id: Some(payload.license_id.clone()),
            device_id: Some(payload.device.id.clone()),
            product: Some(payload.product.clone()),
            entitlements: payload.entitlements.clone(),
            expires_at: payload.expires_at,
            refresh_by: Some(payload.refresh_by),
            works_offline_until: Some(works_until),
            in_grace: payload.checked_out_until.is_none() && payload.refresh_by <= now && now < works_until,
            checked_out_until: payload.checked_out_until,
            version: Some(payload.version),
        }
    }
}

fn works_offline_until(payload: &LicensePayload) -> DateTime<Utc> {
    payload.checked_out_until.unwrap_or_else(|| {
        Duration::try_seconds(payload.grace_seconds)
            .and_then(|grace| payload.refresh_by.checked_add_signed(grace))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    })
}

/// Reads every Ed25519 public key (SubjectPublicKeyInfo PEM blocks, as `signingKeys` lists
/// them) in `pem`: ship the vendor's current and previous keys to accept files from both.
///
/// # Errors
/// [`ClientError::Refused`] when a block is not an Ed25519 public key, or there is none.
pub fn vendor_keys(pem: &str) -> Result<Vec<VerifyingKey>, ClientError> {
    use ed25519_dalek::pkcs8::DecodePublicKey as _;
    const END: &str = "-----END PUBLIC KEY-----";
    let mut keys = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find("-----BEGIN PUBLIC KEY-----") {
        let Some(end) = rest[start..].find(END).map(|i| start + i + END.len()) else {
            break;
        };
        let key = VerifyingKey::from_public_key_pem(&rest[start..end])
            .map_err(|e| ClientError::Refused(format!("the vendor public key is not an Ed25519 key: {e}")))?;
        keys.push(key);
        rest = &rest[end..];
    }
    if keys.is_empty() {
        return Err(ClientError::Refused(
            "no PUBLIC KEY block in the vendor key file (use signingKeys { publicKeyPem })".into(),
        ));
    }
    Ok(keys)
}

fn verify_with(text: &str, keys: &[VerifyingKey]) -> Result<LicensePayload, protocol::envelope::FileError> {
    license_file::verify(text, |kid| {
        keys.iter().copied().find(|k| protocol::signing::key_id(k) == kid)
    })
}

/// The offline check of a license file, with no IO: signature with one of the vendor's
/// keys, the clock against `newest_seen` (and the file's `server_time`), then the rules of
/// [`validation::evaluate`] for this machine's `components` and the `entitlements` needed.
#[must_use]
pub fn check(
    text: &str,
    keys: &[VerifyingKey],
    components: &Components,
    entitlements: &[String],
    now: DateTime<Utc>,
    newest_seen: Option<DateTime<Utc>>,
) -> Status {
    let payload = match verify_with(text, keys) {
        Ok(payload) => payload,
        Err(e) => {
            return Status::without_file(
                StatusCode::InvalidFile,
                format!("the installed license file cannot be trusted ({e}): install a fresh one from the vendor"),
            );
        }
    };
    let seen = newest_seen.map_or(payload.server_time, |seen| seen.max(payload.server_time));
    if now + Duration::seconds(CLOCK_TOLERANCE_SECONDS) < seen {
        let detail = format!(
            "the clock reads {}, earlier than {} which this installation has already seen: set the clock right",
            now.to_rfc3339(),
            seen.to_rfc3339()
        );
        return Status::of(&payload, StatusCode::ClockTamper, detail, now);
    }
    let verdict = validation::evaluate(&payload, now, components, entitlements);
    Status::of(&payload, verdict.code.into(), verdict.detail, now)
}

/// How the client is set up.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The vendor's public keys ([`vendor_keys`]); needed to install or check license files.
    pub vendor_keys: Vec<VerifyingKey>,
    /// Fingerprint components to use instead of detecting them ([`detect::components`]).
    pub components: Option<Components>,
    /// Added to the system clock (tests; equivalent to changing the system clock, which the
    /// clock checks handle).
    pub clock_offset: Duration,
}

/// What a heartbeat did.
#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatReport {
    /// When the next heartbeat is due.
    pub next_heartbeat_due_at: Option<DateTime<Utc>>,
    /// Whether a newer license file was fetched and installed.
    pub refreshed: bool,
    /// The license's version on the server.
    pub license_version: i64,
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

    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.options.clock_offset
    }

    fn keys(&self) -> Result<&[VerifyingKey], ClientError> {
        if self.options.vendor_keys.is_empty() {
            return Err(ClientError::Refused(
                "the vendor's public key is needed to check license files: pass --public-key FILE".into(),
            ));
        }
        Ok(&self.options.vendor_keys)
    }

    /// The newest time seen: the clock file, and the last ledger record.
    fn newest_seen(&self, device_id: Option<&str>) -> Result<Option<DateTime<Utc>>, ClientError> {
        let ledger_last = match device_id {
            Some(id) => self.state.ledger(id)?.last().map(|r| r.recorded_at),
            None => None,
        };
        Ok(self.state.newest_seen()?.max(ledger_last))
    }

    /// The installed license, verified (its validity here and now aside). A file of an
    /// activation that was given back counts as not installed.
    fn installed(&self) -> Result<Option<LicensePayload>, ClientError> {
        let Some(text) = self.state.license_file()? else {
            return Ok(None);
        };
        let payload = verify_with(&text, self.keys()?)
            .map_err(|e| ClientError::Refused(format!("the installed license file cannot be trusted: {e}")))?;
        Ok((!given_back(&self.state.history()?, &payload)).then_some(payload))
    }

    /// Validates the installed license offline for the `entitlements` the software needs,
    /// and remembers the time if the clock is believable.
    ///
    /// # Errors
    /// [`ClientError`] for a missing vendor key or an unreadable state directory; a license
    /// that is not valid is an `Ok` [`Status`] with `valid: false`.
    pub fn status(&self, entitlements: &[String]) -> Result<Status, ClientError> {
        let _lock = self.state.lock()?;
        self.status_locked(entitlements)
    }

    fn status_locked(&self, entitlements: &[String]) -> Result<Status, ClientError> {
        let keys = self.keys()?;
        let history = self.state.history()?;
        let text = self.state.license_file()?;
        let verified = text.as_deref().and_then(|t| verify_with(t, keys).ok());
        let (Some(text), false) = (&text, verified.as_ref().is_some_and(|p| given_back(&history, p))) else {
            let last = history.given_back.values().max_by_key(|g| g.at);
            let detail = match last {
                Some(g) if text.is_none() || verified.is_some() => format!(
                    "this device gave its seat back at {} ({}): activate again to use the software",
                    g.at.to_rfc3339(),
                    g.how
                ),
                _ => "no license is installed: run `activate`, or `request` and `install` offline".into(),
            };
            return Ok(Status::without_file(StatusCode::NotActivated, detail));
        };
        let now = self.now();
        let device_id = verified.map(|p| p.device.id);
        let status = check(
            text,
            keys,
            &self.components,
            entitlements,
            now,
            self.newest_seen(device_id.as_deref())?,
        );
        if status.code != StatusCode::ClockTamper {
            self.state.saw(now)?;
        }
        Ok(status)
    }

    /// Checks a license file and installs it: it must verify with the vendor's key, be bound
    /// to this machine, not be older than a file this installation already accepted for the
    /// license, and not belong to an activation this installation gave back.
    ///
    /// # Errors
    /// [`ClientError::Refused`] saying why the file was not installed (nothing changes).
    pub fn install(&self, text: &str) -> Result<Status, ClientError> {
        let _lock = self.state.lock()?;
        self.install_locked(text)?;
        self.status_locked(&[])
    }

    fn install_locked(&self, text: &str) -> Result<(), ClientError> {
        let payload = verify_with(text, self.keys()?).map_err(|e| {
            ClientError::Refused(format!(
                "this license file was not installed: {e} (is it from this vendor, and unchanged?)"
            ))
        })?;
        let here = self.binding(&payload);
        if here.code != ValidationCode::Valid {
            return Err(ClientError::Refused(format!(
                "this license file is for another machine: {}",
                here.detail
            )));
        }
        let mut history = self.state.history()?;
        if given_back(&history, &payload) {
            return Err(ClientError::Refused(format!(
                "device {} gave its seat back; this file belongs to that activation and cannot be installed again: activate again",
                payload.device.id
            )));
        }
        let mark = FileMark {
            version: payload.version,
            server_time: payload.server_time,
        };
        if let Some(newest) = history.newest.get(&payload.license_id)
            && mark < *newest
        {
            return Err(ClientError::Refused(format!(
                "this license file (version {}, signed {}) is older than the installed one (version {}, signed {}): it cannot replace it",
                mark.version,
                mark.server_time.to_rfc3339(),
                newest.version,
                newest.server_time.to_rfc3339()
            )));
        }
        // Another device's file of the same license replaces the installed one only when the
        // installed one no longer matches this machine (its hardware changed).
        if let Some(current) = self.installed().ok().flatten()
            && current.license_id == payload.license_id
            && current.device.id != payload.device.id
            && self.binding(&current).code == ValidationCode::Valid
        {
            return Err(ClientError::Refused(format!(
                "this file is for device {}, but this installation is device {}",
                payload.device.id, current.device.id
            )));
        }
        self.state.set_license_file(text)?;
        history.newest.insert(payload.license_id.clone(), mark);
        self.state.set_history(&history)?;
        self.state.saw(payload.server_time)
    }

    /// Whether a file's device binding matches this machine.
    fn binding(&self, payload: &LicensePayload) -> validation::Verdict {
        check_fingerprint(
            &payload.device.components,
            &payload.device.fingerprint,
            &self.components,
            &fingerprint::fingerprint(&self.components),
            payload.min_component_matches,
        )
    }

    /// Writes an activation request for `license_key`, signed by the device key, for the
    /// vendor's offline portal.
    ///
    /// # Errors
    /// [`ClientError`] when the key cannot be made or the request signed.
    pub fn request(&self, license_key: &str) -> Result<String, ClientError> {
        let _lock = self.state.lock()?;
        let key = self.state.device_key()?;
        let request = ActivationRequest {
            format: offline::FORMAT,
            license_key: license_key.trim().to_owned(),
            fingerprint: fingerprint::fingerprint(&self.components),
            components: self.components.clone(),
            device_public_key: offline::encode_public_key(&key.verifying_key()),
            hostname: detect::host_name(),
            platform: Some(platform()),
            created_at: self.now(),
        };
        offline::write_request(&request, &key).map_err(|e| ClientError::Refused(e.to_string()))
    }

    /// Activates online with `license_key` and installs the license file the server returns.
    ///
    /// # Errors
    /// [`ClientError::Server`] when the server refuses (`ACTIVATION_LIMIT_REACHED`...),
    /// [`ClientError::Network`], or a refused file.
    pub fn activate(&self, server_url: &str, license_key: &str) -> Result<Status, ClientError> {
        self.keys()?;
        let _lock = self.state.lock()?;
        let key = self.state.device_key()?;
        let server = Server::new(server_url)?;
        let components: Vec<_> = self
            .components
            .iter()
            .map(|(name, value)| json!({ "name": name, "value": value }))
            .collect();
        let data = server.call(
            None,
            "mutation($input: ActivateDeviceInput!) { activateDevice(input: $input) { deviceToken licenseFile } }",
            json!({ "input": {
                "licenseKey": license_key.trim(),
                "fingerprint": fingerprint::fingerprint(&self.components),
                "components": components,
                "hostname": detect::host_name(),
                "platform": platform(),
                "devicePublicKey": offline::encode_public_key(&key.verifying_key()),
            }}),
        )?;
        let file = data["activateDevice"]["licenseFile"].as_str().unwrap_or_default();
        let token = data["activateDevice"]["deviceToken"].as_str().unwrap_or_default();
        self.install_locked(file)?;
        self.state.set_session(&Session {
            server: server_url.to_owned(),
            token: token.to_owned(),
        })?;
        self.status_locked(&[])
    }

    fn session(&self) -> Result<(Session, Server), ClientError> {
        let session = self.state.session()?.ok_or_else(|| {
            ClientError::Refused("this device was not activated online: run `activate --server URL --key KEY`".into())
        })?;
        let server = Server::new(&session.server)?;
        Ok((session, server))
    }

    fn fetch_and_install(&self, session: &Session, server: &Server) -> Result<(), ClientError> {
        let data = server.call(Some(&session.token), "mutation { fetchLicenseFile }", json!({}))?;
        self.install_locked(data["fetchLicenseFile"].as_str().unwrap_or_default())
    }

    /// Heartbeats, and fetches and installs a new license file when the license changed or
    /// the installed file is past half of its refresh horizon.
    ///
    /// # Errors
    /// [`ClientError::Network`] when the server cannot be reached (the installed file keeps
    /// working through its grace period), [`ClientError::Server`] when it refuses.
    pub fn heartbeat(&self) -> Result<HeartbeatReport, ClientError> {
        let _lock = self.state.lock()?;
        let (session, server) = self.session()?;
        let data = server.call(
            Some(&session.token),
            "mutation { heartbeat { updateAvailable nextHeartbeatDueAt licenseVersion } }",
            json!({}),
        )?;
        let beat = &data["heartbeat"];
        let now = self.now();
        let stale = self.installed()?.is_none_or(|p| {
            let horizon = p.refresh_by - p.server_time;
            p.server_time + horizon / 2 <= now
        });
        let refreshed = beat["updateAvailable"].as_bool() == Some(true) || stale;
        if refreshed {
            self.fetch_and_install(&session, &server)?;
        }
        Ok(HeartbeatReport {
            next_heartbeat_due_at: beat["nextHeartbeatDueAt"].as_str().and_then(|s| s.parse().ok()),
            refreshed,
            license_version: beat["licenseVersion"].as_i64().unwrap_or_default(),
        })
    }

    /// Checks the device out for `ttl_seconds` of off-network use and installs the check-out
    /// file.
    ///
    /// # Errors
    /// As [`Client::heartbeat`].
    pub fn check_out(&self, ttl_seconds: i64) -> Result<Status, ClientError> {
        let _lock = self.state.lock()?;
        let (session, server) = self.session()?;
        let data = server.call(
            Some(&session.token),
            "mutation($ttl: Int!) { checkOutDevice(ttlSeconds: $ttl) }",
            json!({ "ttl": ttl_seconds }),
        )?;
        self.install_locked(data["checkOutDevice"].as_str().unwrap_or_default())?;
        self.status_locked(&[])
    }

    /// Returns a check-out early and installs the ordinary license file again.
    ///
    /// # Errors
    /// As [`Client::heartbeat`].
    pub fn check_in(&self) -> Result<Status, ClientError> {
        let _lock = self.state.lock()?;
        let (session, server) = self.session()?;
        server.call(Some(&session.token), "mutation { checkInDevice { id } }", json!({}))?;
        self.fetch_and_install(&session, &server)?;
        self.status_locked(&[])
    }

    /// Ledger records the server has not acknowledged yet.
    fn unacknowledged(&self, payload: &LicensePayload) -> Result<Vec<LedgerRecord>, ClientError> {
        let acknowledged = payload.usage_ack.as_ref().map_or(0, |a| a.seq);
        Ok(self
            .state
            .ledger(&payload.device.id)?
            .into_iter()
            .filter(|r| r.seq > acknowledged)
            .collect())
    }

    /// Records `quantity` of `meter` in the usage ledger (the license must be valid and grant
    /// the meter).
    ///
    /// # Errors
    /// [`ClientError::Refused`] for an invalid license, a meter it does not grant, or a
    /// quantity outside 1..=[`ledger::MAX_QUANTITY`].
    pub fn record_use(&self, meter: &str, quantity: i64) -> Result<LedgerRecord, ClientError> {
        if !(1..=ledger::MAX_QUANTITY).contains(&quantity) {
            return Err(ClientError::Refused(format!(
                "the amount must be between 1 and {}",
                ledger::MAX_QUANTITY
            )));
        }
        let _lock = self.state.lock()?;
        let status = self.status_locked(&[])?;
        if !status.valid {
            return Err(ClientError::Refused(format!(
                "the license is not valid ({:?}): {}",
                status.code, status.detail
            )));
        }
        let payload = self
            .installed()?
            .ok_or_else(|| ClientError::Refused("no license is installed".into()))?;
        if !payload.meters.iter().any(|m| m.code == meter) {
            let granted: Vec<&str> = payload.meters.iter().map(|m| m.code.as_str()).collect();
            return Err(ClientError::Refused(format!(
                "this license has no meter {meter:?} (it grants: {})",
                if granted.is_empty() {
                    "none".to_owned()
                } else {
                    granted.join(", ")
                }
            )));
        }
        let key = self.state.device_key()?;
        let ledger = self.state.ledger(&payload.device.id)?;
        // A clock stepped back a little (inside the tolerance) must not date a record before
        // the one it follows: that would read as tampering.
        let at = ledger
            .last()
            .map_or(self.now(), |last| self.now().max(last.recorded_at));
        let record = ledger::append(&payload.device.id, &key, ledger.last(), meter, quantity, at);
        self.state.append_ledger(&payload.device.id, &record)?;
        Ok(record)
    }

    /// A usage report carrying the ledger records not yet acknowledged.
    ///
    /// # Errors
    /// [`ClientError::Refused`] without an installed license or with nothing to report.
    pub fn usage_report(&self) -> Result<String, ClientError> {
        let _lock = self.state.lock()?;
        let payload = self
            .installed()?
            .ok_or_else(|| ClientError::Refused("no license is installed".into()))?;
        let records = self.unacknowledged(&payload)?;
        if records.is_empty() {
            return Err(ClientError::Refused(
                "no usage to report: every record was acknowledged".into(),
            ));
        }
        let report = UsageReport {
            format: offline::FORMAT,
            license_id: payload.license_id,
            device_id: payload.device.id,
            created_at: self.now(),
            records,
        };
        offline::write(&report, &self.state.device_key()?).map_err(|e| ClientError::Refused(e.to_string()))
    }

    /// Records that the installed activation was given back, then removes its file: from
    /// the first step on, `status` treats it as deactivated, so a crash in between is safe.
    fn give_back(&self, payload: &LicensePayload, how: String) -> Result<(), ClientError> {
        let mut history = self.state.history()?;
        history.given_back.insert(
            payload.device.id.clone(),
            GivenBack {
                license_file_time: payload.server_time,
                at: self.now(),
                how,
            },
        );
        self.state.set_history(&history)?;
        self.state.remove_license()
    }

    /// Gives the seat back offline: writes a deactivation file to `out` (signed by the device
    /// key, carrying the unacknowledged ledger records; durable before anything else changes)
    /// for the vendor to import, then stops validating. The device key and ledger stay.
    ///
    /// # Errors
    /// [`ClientError::Refused`] without an installed license or when `out` cannot be written
    /// (then nothing changes).
    pub fn deactivate_offline(&self, out: &std::path::Path) -> Result<(), ClientError> {
        let _lock = self.state.lock()?;
        let payload = self
            .installed()?
            .ok_or_else(|| ClientError::Refused("no license is installed: nothing to deactivate".into()))?;
        let file = DeactivationFile {
            format: offline::FORMAT,
            records: self.unacknowledged(&payload)?,
            license_id: payload.license_id.clone(),
            device_id: payload.device.id.clone(),
            fingerprint: payload.device.fingerprint.clone(),
            license_file_time: payload.server_time,
            deactivated_at: self.now(),
        };
        let text = offline::write(&file, &self.state.device_key()?).map_err(|e| ClientError::Refused(e.to_string()))?;
        state::write_durably(out, text.as_bytes())
            .map_err(|e| ClientError::Refused(format!("the deactivation file was not written: {e}")))?;
        self.give_back(&payload, format!("deactivation file {}", out.display()))
    }

    /// Gives the seat back online. Refused while the ledger holds records the server has not
    /// acknowledged (use [`Client::deactivate_offline`], whose file carries them).
    ///
    /// # Errors
    /// [`ClientError::Refused`], [`ClientError::Server`], [`ClientError::Network`].
    pub fn deactivate_online(&self) -> Result<(), ClientError> {
        let _lock = self.state.lock()?;
        let payload = self
            .installed()?
            .ok_or_else(|| ClientError::Refused("no license is installed: nothing to deactivate".into()))?;
        let pending = self.unacknowledged(&payload)?;
        if !pending.is_empty() {
            return Err(ClientError::Refused(format!(
                "{} usage records have not reached the server yet: deactivate with --out FILE, whose file carries them",
                pending.len()
            )));
        }
        let (session, server) = self.session()?;
        server.call(Some(&session.token), "mutation { deactivateDevice { id } }", json!({}))?;
        self.give_back(&payload, "online".into())
    }
}

/// Whether `payload` belongs to an activation this installation gave back.
fn given_back(history: &state::History, payload: &LicensePayload) -> bool {
    history
        .given_back
        .get(&payload.device.id)
        .is_some_and(|g| payload.server_time <= g.license_file_time)
}

/// `linux-x86_64` and the like.
fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}
