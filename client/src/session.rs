//! The calls a device makes online: activation (which starts its session, the server and
//! device token kept in the state directory), and with that token heartbeats and license-file
//! refreshes, check-out and check-in, and giving the seat back.

use chrono::{DateTime, Utc};
use protocol::fingerprint;
use protocol::offline;
use serde::Serialize;

use crate::online::Server;
use crate::operations::{
    ActivateDevice, CheckInDevice, CheckOutDevice, DeactivateDevice, FetchLicenseFile, Heartbeat, activate_device,
    check_in_device, check_out_device, deactivate_device, fetch_license_file, heartbeat,
};
use crate::state::Session;
use crate::{Client, ClientError, Status, detect};

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

impl Client {
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
        let components = self
            .components
            .iter()
            .map(|(name, value)| activate_device::ComponentInput {
                name: name.clone(),
                value: value.clone(),
            })
            .collect();
        let input = activate_device::ActivateDeviceInput {
            license_key: license_key.trim().to_owned(),
            fingerprint: fingerprint::fingerprint(&self.components),
            components: Some(components),
            name: None,
            hostname: detect::host_name(),
            platform: Some(detect::platform()),
            device_public_key: Some(offline::encode_public_key(&key.verifying_key())),
            variables: None,
            // Only for re-activating a live device under `requireDeviceKeyProof`; not sent
            // when absent, so older servers see the same document as before.
            key_proof: None,
        };
        let activation = server
            .run::<ActivateDevice>(None, activate_device::Variables { input })?
            .activate_device;
        self.install_locked(&activation.license_file)?;
        self.state.set_session(&Session {
            server: server_url.to_owned(),
            token: activation.device_token,
        })?;
        self.status_locked(&[])
    }

    /// The online session of this device, and its server.
    fn session(&self) -> Result<(Session, Server), ClientError> {
        let session = self.state.session()?.ok_or_else(|| {
            ClientError::Refused("this device was not activated online: run `activate --server URL --key KEY`".into())
        })?;
        let server = Server::new(&session.server)?;
        Ok((session, server))
    }

    /// Fetches the device's current license file and installs it.
    fn fetch_and_install(&self, session: &Session, server: &Server) -> Result<(), ClientError> {
        let data = server.run::<FetchLicenseFile>(Some(&session.token), fetch_license_file::Variables)?;
        self.install_locked(&data.fetch_license_file)
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
        let beat = server
            .run::<Heartbeat>(Some(&session.token), heartbeat::Variables)?
            .heartbeat;
        let now = self.now();
        let stale = self.installed()?.is_none_or(|p| {
            let horizon = p.refresh_by - p.server_time;
            p.server_time + horizon / 2 <= now
        });
        let refreshed = beat.update_available || stale;
        if refreshed {
            self.fetch_and_install(&session, &server)?;
        }
        Ok(HeartbeatReport {
            next_heartbeat_due_at: beat.next_heartbeat_due_at,
            refreshed,
            license_version: beat.license_version,
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
        let data =
            server.run::<CheckOutDevice>(Some(&session.token), check_out_device::Variables { ttl: ttl_seconds })?;
        self.install_locked(&data.check_out_device)?;
        self.status_locked(&[])
    }

    /// Returns a check-out early and installs the ordinary license file again.
    ///
    /// # Errors
    /// As [`Client::heartbeat`].
    pub fn check_in(&self) -> Result<Status, ClientError> {
        let _lock = self.state.lock()?;
        let (session, server) = self.session()?;
        server.run::<CheckInDevice>(Some(&session.token), check_in_device::Variables)?;
        self.fetch_and_install(&session, &server)?;
        self.status_locked(&[])
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
        server.run::<DeactivateDevice>(Some(&session.token), deactivate_device::Variables)?;
        self.give_back(&payload, "online".into())
    }
}
