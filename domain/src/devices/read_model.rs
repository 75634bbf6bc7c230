//! The hot path's read model: the license rows (with their policy) and the device rows that
//! `validateLicense` and `heartbeat` read, kept in memory so that a call that changes nothing
//! needs no database round trip. Concurrent misses of one row share one read.
//!
//! Freshness, like device token generations:
//! - every change this process commits to a license or its devices forgets that license at
//!   once ([`ReadModel::forget`], called after the commit), so the next call reads it again;
//! - another process's changes are seen within [`FRESH_FOR`] on PostgreSQL (each row is
//!   trusted that long), or at once when the cross-process feed is live (Redis pub/sub, run
//!   by the `worker` crate: it publishes what [`ReadModel::forgotten`] yields and calls
//!   [`ReadModel::forget_remote`]; rows are then trusted for [`TRUSTED_FOR`]);
//! - on SQLite every process writes through its one writer connection, so SQLite itself says
//!   when another process committed: `PRAGMA data_version` on that connection, asked at most
//!   every [`SQLITE_CHECK_EVERY`] before a lookup, forgets everything when it moved. Rows are
//!   trusted for [`TRUSTED_FOR`] otherwise.
//!
//! A read that raced with a change is never used: each license hashes to one of a few hundred
//! epoch counters, bumped by every forget, and a row read from the database carries the
//! counter's value from before the read; a row whose counter has moved since is read again.
//!
//! Nothing here decides anything: a device row that would lead to a refusal or a write (a
//! dead device) is read again from the database by the caller first.

use std::hash::BuildHasher as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use entity::enums::DeviceStatus;
use entity::{device, license, policy};
use moka::Expiry;
use moka::future::Cache;
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait, QueryFilter, Statement};

use crate::licenses::{find_by_key, key_lookup, with_policy};
use crate::secrets::MasterSecret;
use crate::{Error, Result};

/// How long a row is trusted on PostgreSQL without the cross-process feed.
pub const FRESH_FOR: Duration = Duration::from_secs(2);
/// How long a row is trusted while something tells this process of other processes'
/// changes (the Redis feed, or SQLite's data version).
pub const TRUSTED_FOR: Duration = Duration::from_secs(60);
/// How often, at most, SQLite is asked whether another connection committed.
pub const SQLITE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Most license rows kept (the least recently used go first).
const MAX_LICENSES: u64 = 20_000;
/// Most device lookups kept (a fingerprint with no device counts too).
const MAX_DEVICES: u64 = 50_000;
/// Epoch counters (a license uses the one its id hashes to).
const EPOCHS: usize = 512;
/// Local forgets buffered for the cross-process feed before it lags (see
/// [`ReadModel::forgotten`]).
const FORGOTTEN_BUFFER: usize = 4096;

/// A license as the hot path sees it.
#[derive(Debug)]
pub struct LicenseView {
    /// The license row.
    pub license: license::Model,
    /// Its policy.
    pub policy: policy::Model,
    epoch: u64,
}

/// The live device of a license with a fingerprint, or none.
#[derive(Debug)]
struct DeviceView {
    device: Option<device::Model>,
    epoch: u64,
}

/// A device's current token generation (what a device token must name), with its vendor and
/// license.
#[derive(Debug)]
pub struct TokenGeneration {
    /// The generation a valid token names.
    pub generation: i32,
    /// The device's vendor.
    pub vendor_id: String,
    /// The device's license.
    pub license_id: String,
    epoch: u64,
}

/// Trusts each row for as long as something would tell this process of a change.
struct Trust(Arc<Freshness>);

struct Freshness {
    /// SQLite: [`ReadModel::follow_other_writers`] sees every other writer.
    sqlite: bool,
    /// The cross-process feed is subscribed.
    feed_live: AtomicBool,
}

impl Freshness {
    fn trusted_for(&self) -> Duration {
        if self.sqlite || self.feed_live.load(Ordering::SeqCst) {
            TRUSTED_FOR
        } else {
            FRESH_FOR
        }
    }
}

impl<K, V> Expiry<K, V> for Trust {
    fn expire_after_create(&self, _: &K, _: &V, _: Instant) -> Option<Duration> {
        Some(self.0.trusted_for())
    }
}

/// The read model (one per process, shared by every clone of the domain).
pub struct ReadModel {
    /// License id by key lookup hash (a license's key never changes).
    by_key: moka::sync::Cache<String, String>,
    licenses: Cache<String, Arc<LicenseView>>,
    devices: Cache<(String, String), Arc<DeviceView>>,
    token_generations: Cache<String, Arc<TokenGeneration>>,
    epochs: Box<[AtomicU64]>,
    /// Bumped by every forget: a device row read while it moved may predate a change to a
    /// license not known before the read.
    any_forget: AtomicU64,
    hasher: std::collections::hash_map::RandomState,
    freshness: Arc<Freshness>,
    /// SQLite's `data_version` as last seen, and when it was asked.
    data_version: AtomicI64,
    checked_at: std::sync::Mutex<Option<Instant>>,
    checking: tokio::sync::Mutex<()>,
    /// Licenses this process changed, for the cross-process feed.
    forgotten: tokio::sync::broadcast::Sender<String>,
}

impl ReadModel {
    /// An empty read model for a database on `backend`.
    #[must_use]
    pub fn new(backend: DatabaseBackend) -> Self {
        let freshness = Arc::new(Freshness {
            sqlite: backend == DatabaseBackend::Sqlite,
            feed_live: AtomicBool::new(false),
        });
        Self {
            by_key: moka::sync::Cache::new(MAX_LICENSES),
            licenses: Cache::builder()
                .max_capacity(MAX_LICENSES)
                .expire_after(Trust(freshness.clone()))
                .build(),
            devices: Cache::builder()
                .max_capacity(MAX_DEVICES)
                .expire_after(Trust(freshness.clone()))
                .build(),
            token_generations: Cache::builder()
                .max_capacity(MAX_DEVICES)
                .expire_after(Trust(freshness.clone()))
                .build(),
            any_forget: AtomicU64::new(0),
            epochs: (0..EPOCHS).map(|_| AtomicU64::new(0)).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            freshness,
            data_version: AtomicI64::new(i64::MIN),
            checked_at: std::sync::Mutex::new(None),
            checking: tokio::sync::Mutex::new(()),
            forgotten: tokio::sync::broadcast::channel(FORGOTTEN_BUFFER).0,
        }
    }

    /// The epoch of a license now: rows read after this are current as of it.
    pub(crate) fn epoch(&self, license_id: &str) -> u64 {
        self.epoch_counter(license_id).load(Ordering::SeqCst)
    }

    fn epoch_counter(&self, license_id: &str) -> &AtomicU64 {
        let slot = usize::try_from(self.hasher.hash_one(license_id) % EPOCHS as u64).unwrap_or(0);
        &self.epochs[slot]
    }

    /// Forgets a license this process changed (call it after the change is committed); the
    /// cross-process feed passes it on.
    pub fn forget(&self, license_id: &str) {
        self.forget_remote(license_id);
        // No receiver (no feed): nothing to pass on.
        let _ = self.forgotten.send(license_id.to_owned());
    }

    /// Forgets a license another process changed.
    pub fn forget_remote(&self, license_id: &str) {
        // Rows read before this carry the old epoch and are read again when next asked for.
        self.epoch_counter(license_id).fetch_add(1, Ordering::SeqCst);
        self.any_forget.fetch_add(1, Ordering::SeqCst);
    }

    /// Forgets every row (another process changed something, or the feed lost messages).
    pub fn forget_all(&self) {
        for epoch in &self.epochs {
            epoch.fetch_add(1, Ordering::SeqCst);
        }
        self.any_forget.fetch_add(1, Ordering::SeqCst);
        self.licenses.invalidate_all();
        self.devices.invalidate_all();
        self.token_generations.invalidate_all();
    }

    /// The licenses this process forgets from now on, for the cross-process feed. A receiver
    /// that falls more than a few thousand behind gets `Lagged`, and should tell the others
    /// to forget everything.
    #[must_use]
    pub fn forgotten(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.forgotten.subscribe()
    }

    /// Marks the cross-process feed live (rows are then trusted longer) or not. Either way
    /// every row is forgotten: those kept under the other trust period no longer hold.
    pub fn set_feed_live(&self, live: bool) {
        self.freshness.feed_live.store(live, Ordering::SeqCst);
        self.forget_all();
    }

    /// On SQLite, forgets everything when another connection committed since the last look
    /// (asked at most every [`SQLITE_CHECK_EVERY`], by one caller at a time).
    async fn follow_other_writers(&self, writer: &DatabaseConnection) -> Result<()> {
        if !self.freshness.sqlite {
            return Ok(());
        }
        let due = |checked_at: &std::sync::Mutex<Option<Instant>>| {
            checked_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_none_or(|at| at.elapsed() >= SQLITE_CHECK_EVERY)
        };
        if !due(&self.checked_at) {
            return Ok(());
        }
        let _checking = self.checking.lock().await;
        if !due(&self.checked_at) {
            return Ok(());
        }
        let row = writer
            .query_one_raw(Statement::from_string(DatabaseBackend::Sqlite, "PRAGMA data_version"))
            .await?
            .ok_or_else(|| Error::Internal("PRAGMA data_version answered nothing".into()))?;
        let version: i64 = row.try_get_by_index(0)?;
        if self.data_version.swap(version, Ordering::SeqCst) != version {
            self.forget_all();
        }
        *self
            .checked_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        Ok(())
    }

    /// The license with this key and its policy, if there is one.
    ///
    /// # Errors
    /// Database errors.
    pub(crate) async fn license_by_key(
        &self,
        db: &DatabaseConnection,
        writer: &DatabaseConnection,
        secrets: &MasterSecret,
        typed: &str,
    ) -> Result<Option<Arc<LicenseView>>> {
        let lookup = key_lookup(secrets, typed);
        let license_id = match self.by_key.get(&lookup) {
            Some(license_id) => license_id,
            None => {
                // A key seen for the first time: one more read, to learn its license.
                let Some((license, _)) = find_by_key(secrets, db, typed, false).await? else {
                    return Ok(None);
                };
                self.by_key.insert(lookup, license.id.clone());
                license.id
            }
        };
        self.license(db, writer, &license_id).await
    }

    /// A license and its policy by id (`None`: there is no such license).
    ///
    /// # Errors
    /// Database errors.
    pub(crate) async fn license(
        &self,
        db: &DatabaseConnection,
        writer: &DatabaseConnection,
        license_id: &str,
    ) -> Result<Option<Arc<LicenseView>>> {
        self.follow_other_writers(writer).await?;
        let read = || async {
            let epoch = self.epoch(license_id);
            let (license, policy) = with_policy(db, license::Entity::find_by_id(license_id), false)
                .await?
                .ok_or(Error::NotFound("license"))?;
            Ok::<_, Error>(Arc::new(LicenseView { license, policy, epoch }))
        };
        // A row read before a forget is read again (twice at most, then read for this call only).
        for _ in 0..2 {
            let view = match self.licenses.try_get_with_by_ref(license_id, read()).await {
                Ok(view) => view,
                Err(err) => return shared_error(&err).map(|()| None),
            };
            if view.epoch == self.epoch(license_id) {
                return Ok(Some(view));
            }
            self.licenses.invalidate(license_id).await;
        }
        match read().await {
            Ok(view) => Ok(Some(view)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Keeps a device row just written (a heartbeat), as read at `epoch` (taken before the
    /// write: a forget since then makes the row be read again).
    pub(crate) async fn remember_device(&self, epoch: u64, device: &device::Model) {
        let key = (device.license_id.clone(), device.fingerprint.clone());
        let view = Arc::new(DeviceView {
            device: Some(device.clone()),
            epoch,
        });
        self.devices.insert(key, view).await;
    }

    /// The device of a license with this fingerprint that is not released, if any.
    ///
    /// # Errors
    /// Database errors.
    pub(crate) async fn device(
        &self,
        db: &DatabaseConnection,
        license_id: &str,
        fingerprint: &str,
    ) -> Result<Option<device::Model>> {
        let read = || async {
            let epoch = self.epoch(license_id);
            let device = device::Entity::find()
                .filter(device::Column::LicenseId.eq(license_id))
                .filter(device::Column::Fingerprint.eq(fingerprint))
                .filter(device::Column::Status.ne(DeviceStatus::Released))
                .one(db)
                .await?;
            Ok::<_, Error>(Arc::new(DeviceView { device, epoch }))
        };
        let key = (license_id.to_owned(), fingerprint.to_owned());
        for _ in 0..2 {
            let view = match self.devices.try_get_with_by_ref(&key, read()).await {
                Ok(view) => view,
                Err(err) => return shared_error(&err).map(|()| None),
            };
            if view.epoch == self.epoch(license_id) {
                return Ok(view.device.clone());
            }
            self.devices.invalidate(&key).await;
        }
        Ok(read().await?.device.clone())
    }
}

impl ReadModel {
    /// A device's current token generation (`None`: there is no such device). Release,
    /// deactivation and re-activation change it, and each forgets the device's license.
    ///
    /// # Errors
    /// Database errors.
    pub(crate) async fn token_generation(
        &self,
        db: &DatabaseConnection,
        writer: &DatabaseConnection,
        device_id: &str,
    ) -> Result<Option<Arc<TokenGeneration>>> {
        self.follow_other_writers(writer).await?;
        if let Some(known) = self.token_generations.get(device_id).await
            && known.epoch == self.epoch(&known.license_id)
        {
            return Ok(Some(known));
        }
        // The license is known only after the read: any forget meanwhile, and it is not kept.
        let forgets = self.any_forget.load(Ordering::SeqCst);
        let Some(device) = device::Entity::find_by_id(device_id).one(db).await? else {
            return Ok(None);
        };
        let epoch = self.epoch(&device.license_id);
        let read = Arc::new(TokenGeneration {
            generation: device.token_generation,
            vendor_id: device.vendor_id,
            license_id: device.license_id,
            epoch,
        });
        if self.any_forget.load(Ordering::SeqCst) == forgets {
            self.token_generations.insert(device_id.to_owned(), read.clone()).await;
        }
        Ok(Some(read))
    }
}

/// A read that failed for every caller waiting on it: `Ok` for "not found", else the error
/// as this caller's own.
fn shared_error(err: &Error) -> Result<()> {
    match err {
        Error::NotFound(_) => Ok(()),
        other => Err(Error::Internal(format!("reading the hot path's rows: {other}"))),
    }
}
