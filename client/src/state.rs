//! The client's state directory, readable by its owner only (0700, files 0600):
//!
//! - `device.key`: the device's Ed25519 key (base64 of its 32-byte seed), made on first use
//!   and kept for the life of the installation (deactivation does not change it);
//! - `license.lic`: the installed license file, exactly as the server signed it;
//! - `session.json`: server URL and device token of an online activation;
//! - `clock.json`: the newest time this installation has seen, for clock-tamper checks;
//! - `history.json`: the newest file accepted per license and the activations given back, so
//!   an older file never replaces a newer one, nor revives a deactivated device;
//! - `ledger-<device id>.jsonl`: the usage ledger, one record per line, append-only;
//! - `.lock`: locked (flock) by every operation that changes the state.
//!
//! Files are replaced atomically (written to a temporary file, synced, renamed, the directory
//! synced), so a crash never leaves half a file; the ledger is appended and synced record by
//! record, and a torn last line (a crash mid-append) is dropped.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{BufReader, Read as _, Write as _};
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

/// The newest license file this installation accepted for one license.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileMark {
    /// The license version the file reflects.
    pub version: i64,
    /// When the server signed it.
    pub server_time: DateTime<Utc>,
}

/// An activation this installation gave back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GivenBack {
    /// `server_time` of the license file held when it was given back: that file, and every
    /// older one of the device, can never be installed again.
    pub license_file_time: DateTime<Utc>,
    /// The device's clock when it gave the seat back.
    pub at: DateTime<Utc>,
    /// `online`, or the deactivation file written.
    pub how: String,
}

/// What this installation remembers across installs and deactivations, so that no file goes
/// back: the newest file accepted per license, and the activations given back per device.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    /// By license id.
    #[serde(default)]
    pub newest: std::collections::BTreeMap<String, FileMark>,
    /// By device id.
    #[serde(default)]
    pub given_back: std::collections::BTreeMap<String, GivenBack>,
}

/// An exclusive lock on the state directory, held while an operation reads and changes it
/// (two processes appending to the ledger at once would fork it). Released when dropped.
pub struct StateLock(#[expect(dead_code, reason = "held for its lock")] File);

/// The state directory.
#[derive(Debug, Clone)]
pub struct State {
    dir: PathBuf,
}

fn io_error(path: &Path, e: &std::io::Error) -> ClientError {
    ClientError::State(format!("{}: {e}", path.display()))
}

/// Makes a directory's entries (a rename, a new file) durable.
fn sync_dir(dir: &Path) -> Result<(), ClientError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, &e))
}

/// Writes `contents` to `path` so that it is either absent or complete, and durable.
///
/// # Errors
/// [`ClientError::State`] when it cannot be written.
pub fn write_durably(path: &Path, contents: &[u8]) -> Result<(), ClientError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
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
    fs::rename(&tmp, path).map_err(|e| io_error(path, &e))?;
    sync_dir(dir)
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
        write_durably(&self.path(name), contents)
    }

    /// Locks the state directory for one operation.
    ///
    /// # Errors
    /// [`ClientError::State`] when the lock file cannot be opened or locked.
    pub fn lock(&self) -> Result<StateLock, ClientError> {
        let path = self.path(".lock");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error(&path, &e))?;
        file.lock().map_err(|e| io_error(&path, &e))?;
        Ok(StateLock(file))
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

    /// Installs a license file (after it was checked).
    ///
    /// # Errors
    /// [`ClientError::State`] when it cannot be written.
    pub fn set_license_file(&self, text: &str) -> Result<(), ClientError> {
        self.write("license.lic", text.as_bytes())
    }

    /// Removes the installed license file and the online session (the device gave its seat
    /// back; record that in the history first).
    ///
    /// # Errors
    /// [`ClientError::State`] when the files cannot be removed.
    pub fn remove_license(&self) -> Result<(), ClientError> {
        self.remove("license.lic")?;
        self.remove("session.json")
    }

    /// The install and deactivation history.
    ///
    /// # Errors
    /// [`ClientError::State`] when it cannot be read.
    pub fn history(&self) -> Result<History, ClientError> {
        Ok(self.read_json("history.json")?.unwrap_or_default())
    }

    /// Saves the history.
    ///
    /// # Errors
    /// [`ClientError::State`] when it cannot be written.
    pub fn set_history(&self, history: &History) -> Result<(), ClientError> {
        self.write_json("history.json", history)
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
        let mut text = String::new();
        BufReader::new(file)
            .read_to_string(&mut text)
            .map_err(|e| io_error(&path, &e))?;
        // Only complete lines count: a crash mid-append leaves a torn last line, which is
        // dropped (and cut off by the next append).
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .map(|line| serde_json::from_str(line).map_err(|e| ClientError::State(format!("{}: {e}", path.display()))))
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
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error(&path, &e))?;
        let mut existing = Vec::new();
        file.read_to_end(&mut existing).map_err(|e| io_error(&path, &e))?;
        let complete = existing.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if complete < existing.len() {
            file.set_len(complete as u64).map_err(|e| io_error(&path, &e))?;
        }
        file.write_all(&line)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error(&path, &e))?;
        sync_dir(&self.dir)
    }
}
