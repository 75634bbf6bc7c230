//! What is installed: checking and installing license files, the install history that keeps
//! an older file from replacing a newer one, and giving a seat back (which that history
//! remembers, so a file of a given-back activation counts as not installed).

use protocol::fingerprint;
use protocol::license_file::LicensePayload;
use protocol::validation::{self, ValidationCode, check_fingerprint};

use crate::check::{Status, StatusCode, check, verify_with};
use crate::state::{FileMark, GivenBack, History};
use crate::{Client, ClientError};

impl Client {
    /// The installed license, verified (its validity here and now aside). A file of an
    /// activation that was given back counts as not installed.
    pub(crate) fn installed(&self) -> Result<Option<LicensePayload>, ClientError> {
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

    /// [`Client::status`] under a lock the caller holds.
    pub(crate) fn status_locked(&self, entitlements: &[String]) -> Result<Status, ClientError> {
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

    /// [`Client::install`] under a lock the caller holds; installs nothing else.
    pub(crate) fn install_locked(&self, text: &str) -> Result<(), ClientError> {
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

    /// Records that the installed activation was given back, then removes its file: from
    /// the first step on, `status` treats it as deactivated, so a crash in between is safe.
    pub(crate) fn give_back(&self, payload: &LicensePayload, how: String) -> Result<(), ClientError> {
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
}

/// Whether `payload` belongs to an activation this installation gave back.
fn given_back(history: &History, payload: &LicensePayload) -> bool {
    history
        .given_back
        .get(&payload.device.id)
        .is_some_and(|g| payload.server_time <= g.license_file_time)
}
