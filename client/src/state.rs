//! The client's state directory, readable by its owner only (0700, files 0600):
//!
//! - `device.key`: the device's Ed25519 key (base64 of its 32-byte seed), made on first use
//!   and kept for the life of the installation (deactivation does not change it);
//! - `license.lic`: the installed license file, exactly as the server signed it;
//! - `session.json`: server URL and device token of an online activation;
//! - `clock.json`: the newest time this installation has seen, for clock-tamper checks;
//! - `ledger-<device id>.jsonl`: the usage ledger, one record per line, append-only;
//! - `deactivated.json`: set when the device gave its seat back.
//!
//! Files are replaced atomically (written to a temporary file, synced, renamed), so a crash
//! never leaves half a file; the ledger is appended and synced record by record.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use protocol::ledger::LedgerRecord;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ClientError;

/// An online activation: where the server is and the device's token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// The server's base URL (`http://host:8080`).
    pub server: String,
    /// The device token (`ldt_...`).
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SeenClock {
    newest_seen: DateTime<Utc>,
}

/// When and how the device gave its seat back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deactivated {
    /// The device's clock when it deactivated.
    pub at: DateTime<Utc>,
    /// The device it was.
    pub device_id: String,
    /// `online`, or the path of the deactivation file written.
    pub how: String,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct State {
    dir: PathBuf,
}

fn io_error(path: &Path, e: &std::io::Error) -> ClientError {
    ClientError::State(format!("{}: {e}", path.display()))
}

impl State {
    /// Opens (creating it if needed) the state directory, and makes it private to its owner.
    ///
    /// # Errors
    /// [`ClientError::State`] when it cannot be created or its permissions set.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ClientError> {
        let dir = dir.into();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io_error(&dir, &e))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|e| io_error(&dir, &e))?;
        Ok(Self { dir })
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read_text(&self, name: &str) -> Result<Option<String>, ClientError> {
        let path = self.path(name);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path, &e)),
        }
    }

    fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ClientError> {
        self.read_text(name)?
            .map(|text| {
                serde_json::from_str(&text)
                    .map_err(|e| ClientError::State(format!("{}: {e}", self.path(name).display())))
            })
            .transpose()
    }

    /// Replaces `name` atomically with `contents`, readable by the owner only.
    fn write(&self, name: &str, contents: &[u8]) -> Result<(), ClientError> {
        let path = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_error(&tmp, &e))?;
        file.write_all(contents)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error(&tmp, &e))?;
        fs::rename(&tmp, &path).map_err(|e| io_error(&path, &e))
    }

    fn write_json(&self, name: &str, value: &impl Serialize) -> Result<(), ClientError> {
        let json = serde_json::to_vec_pretty(value).map_err(|e| ClientError::State(e.to_string()))?;
        self.write(name, &json)
    }

    fn remove(&self, name: &str) -> Result<(), ClientError> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&path, &e)),
        }
    }

    /// The device key, made (from the OS's randomness) on first use.
    ///
    /// # Errors
    /// [`ClientError::State`] when the key file is unreadable or corrupt.
    pub fn device_key(&self) -> Result<SigningKey, ClientError> {
        if let Some(text) = self.read_text("device.key")? {
            let seed: [u8; 32] = STANDARD
                .decode(text.trim())
                .ok()
                .and_then(|raw| raw.try_into().ok())
                .ok_or_else(|| ClientError::State("device.key is corrupt".into()))?;
            return Ok(SigningKey::from_bytes(&seed));
        }
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        self.write("device.key", STANDARD.encode(key.to_bytes()).as_bytes())?;
        Ok(key)
    }

    /// The installed license file.
    ///
    /// # Errors
    /// [`ClientError::State`] when it cannot be read.
    pub fn license_file(&self) -> Result<Option<String>, ClientError> {
        self.read_text("license.lic")
    }

    /// Installs a license file (after it was checked) and clears a past deactivation.
    ///
    /// # Errors
    /// [`ClientError::State`] when it cannot be written.
    pub fn set_license_file(&self, text: &str) -> Result<(), ClientError> {
        self.write("license.lic", text.as_bytes())?;
        self.remove("deactivated.json")
    }

    /// The online session.
    ///
    /// # Errors
    /// [`ClientError::State`] when it cannot be read.
    pub fn session(&self) -> Result<Option<Session>, ClientError> {
        self.read_json("session.json")
    }

    /// Saves the online session.
    ///
    /// # Errors
    /// [`ClientError::State`] when it cannot be written.
    pub fn set_session(&self, session: &Session) -> Result<(), ClientError> {
        self.write_json("session.json", session)
    }

    /// The newest time this installation has seen.
    ///
    /// # Errors
    /// [`ClientError::State`] when it cannot be read.
    pub fn newest_seen(&self) -> Result<Option<DateTime<Utc>>, ClientError> {
        Ok(self.read_json::<SeenClock>("clock.json")?.map(|c| c.newest_seen))
    }

    /// Remembers `at` as seen, if it is newer than what was.
    ///
    /// # Errors
    /// [`ClientError::State`] when it cannot be written.
    pub fn saw(&self, at: DateTime<Utc>) -> Result<(), ClientError> {
        if self.newest_seen()?.is_some_and(|seen| seen >= at) {
            return Ok(());
        }
        self.write_json("clock.json", &SeenClock { newest_seen: at })
    }

    /// The deactivation, if the device gave its seat back since its last install.
    ///
    /// # Errors
    /// [`ClientError::State`] when it cannot be read.
    pub fn deactivated(&self) -> Result<Option<Deactivated>, ClientError> {
        self.read_json("deactivated.json")
    }

    /// Records a deactivation: the license file and session are removed, the device key and
    /// the ledger stay.
    ///
    /// # Errors
    /// [`ClientError::State`] when the files cannot be changed.
    pub fn set_deactivated(&self, deactivated: &Deactivated) -> Result<(), ClientError> {
        self.write_json("deactivated.json", deactivated)?;
        self.remove("license.lic")?;
        self.remove("session.json")
    }

    fn ledger_name(device_id: &str) -> String {
        let safe: String = device_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        format!("ledger-{safe}.jsonl")
    }

    /// The device's usage ledger, oldest first.
    ///
    /// # Errors
    /// [`ClientError::State`] when it cannot be read or a line is not a record.
    pub fn ledger(&self, device_id: &str) -> Result<Vec<LedgerRecord>, ClientError> {
        let path = self.path(&Self::ledger_name(device_id));
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&path, &e)),
        };
        BufReader::new(file)
            .lines()
            .map(|line| {
                let line = line.map_err(|e| io_error(&path, &e))?;
                serde_json::from_str(&line).map_err(|e| ClientError::State(format!("{}: {e}", path.display())))
            })
            .collect()
    }

    /// Appends a record to the device's ledger and syncs it to disk.
    ///
    /// # Errors
    /// [`ClientError::State`] when it cannot be written.
    pub fn append_ledger(&self, device_id: &str, record: &LedgerRecord) -> Result<(), ClientError> {
        let path = self.path(&Self::ledger_name(device_id));
        let mut line = serde_json::to_vec(record).map_err(|e| ClientError::State(e.to_string()))?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error(&path, &e))?;
        file.write_all(&line)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error(&path, &e))
    }
}
