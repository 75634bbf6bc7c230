//! The device-driven detectors of the anomaly scan: USAGE_DROP (devices seen since the
//! watermark), ACTIVATION_BURST and SHARED_FINGERPRINT (activations since the watermark),
//! FINGERPRINT_DRIFT (fingerprint observations) and online CLOCK_TAMPER (touched device hours).
//! Each reads its driver, asks the pure detector in `detectors.rs`, and pushes what it finds.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use entity::enums::DeviceStatus;
use entity::{device, device_status_change, fingerprint_observation, license, usage_hourly, usage_series};
use sea_orm::sea_query::{Expr, Func};
use sea_orm::{ColumnTrait, EntityTrait, JoinType, QueryFilter, QuerySelect, RelationTrait as _};

use super::baseline::hour_start;
use super::detectors::{self, Names, Silence, Window};
use super::{CHUNK, Flag, label, load_licenses, sum_of};
use crate::{Domain, Result};

impl Domain {
    /// USAGE_DROP over the device series of devices seen since the watermark, judging the
    /// last complete hour; returns how many device series were checked.
    pub(super) async fn drops(&self, since: DateTime<Utc>, now: DateTime<Utc>, flags: &mut Vec<Flag>) -> Result<usize> {
        let hour = hour_start(now) - Duration::hours(1);
        let oldest = hour - Duration::weeks(detectors::DROP_WEEKS);
        let candidates: Vec<(String, String, String, String, DateTime<Utc>)> = usage_series::Entity::find()
            .select_only()
            .column(usage_series::Column::VendorId)
            .column(usage_series::Column::LicenseId)
            .column(usage_series::Column::Meter)
            .column(usage_series::Column::DeviceId)
            .column(usage_series::Column::FirstHour)
            .join(
                JoinType::InnerJoin,
                usage_series::Entity::belongs_to(device::Entity)
                    .from(usage_series::Column::DeviceId)
                    .to(device::Column::Id)
                    .into(),
            )
            .filter(usage_series::Column::FirstHour.lte(oldest))
            .filter(device::Column::LastSeenAt.gt(since))
            // Seen after the hour ended: it was alive through it.
            .filter(device::Column::LastSeenAt.gte(hour + Duration::hours(1)))
            .filter(device::Column::Status.is_not_in([DeviceStatus::Dead, DeviceStatus::Released]))
            .into_tuple()
            .all(&self.db)
            .await?;
        let weeks: Vec<DateTime<Utc>> = (0..=detectors::DROP_WEEKS).map(|w| hour - Duration::weeks(w)).collect();
        for batch in candidates.chunks(CHUNK) {
            let licenses = load_licenses(&self.db, batch.iter().map(|c| c.1.clone())).await?;
            for (vendor_id, license_id, meter, device_id, first_hour) in batch {
                let Some((license, _)) = licenses.get(license_id) else {
                    continue;
                };
                let quantities: BTreeMap<DateTime<Utc>, i64> = usage_hourly::Entity::find()
                    .select_only()
                    .column(usage_hourly::Column::Hour)
                    .column(usage_hourly::Column::Quantity)
                    .filter(usage_hourly::Column::LicenseId.eq(license_id))
                    .filter(usage_hourly::Column::Meter.eq(meter))
                    .filter(usage_hourly::Column::DeviceId.eq(device_id))
                    .filter(usage_hourly::Column::Hour.is_in(weeks.iter().copied()))
                    .into_tuple::<(DateTime<Utc>, i64)>()
                    .all(&self.db)
                    .await?
                    .into_iter()
                    .collect();
                let at = |w: usize| weeks.get(w).and_then(|h| quantities.get(h)).copied().unwrap_or(0);
                let silence = Silence {
                    hour,
                    quantity: at(0),
                    weeks_before: [at(1), at(2), at(3)],
                    first_hour: *first_hour,
                };
                let license_label = label(license);
                let names = Names {
                    license: &license_label,
                    meter,
                };
                let series = format!("{license_id}:{meter}:{device_id}");
                if let Some(finding) = detectors::usage_drop(names, device_id, &series, &silence) {
                    flags.push(Flag {
                        vendor_id: vendor_id.clone(),
                        license_id: Some(license_id.clone()),
                        device_id: Some(device_id.clone()),
                        meter: Some(meter.clone()),
                        finding,
                    });
                }
            }
        }
        Ok(candidates.len())
    }

    /// ACTIVATION_BURST over the licenses, and SHARED_FINGERPRINT over the fingerprints, of the
    /// devices that became ACTIVE since the watermark.
    pub(super) async fn bursts_and_shared_fingerprints(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
        flags: &mut Vec<Flag>,
    ) -> Result<()> {
        let activated: Vec<(String, String)> = device_status_change::Entity::find()
            .select_only()
            .column(device_status_change::Column::LicenseId)
            .column(device_status_change::Column::DeviceId)
            .distinct()
            .filter(device_status_change::Column::Status.eq(DeviceStatus::Active))
            .filter(device_status_change::Column::At.gt(since))
            .into_tuple()
            .all(&self.db)
            .await?;
        let license_ids: BTreeSet<String> = activated.iter().map(|(l, _)| l.clone()).collect();
        let day = Window {
            from: now - Duration::days(1),
            to: now,
        };
        let ids: Vec<String> = license_ids.into_iter().collect();
        for batch in ids.chunks(CHUNK) {
            let licenses = load_licenses(&self.db, batch.iter().cloned()).await?;
            let counts: Vec<(String, i64)> = device_status_change::Entity::find()
                .select_only()
                .column(device_status_change::Column::LicenseId)
                .column_as(
                    Expr::from(Func::count_distinct(Expr::col(device_status_change::Column::DeviceId))),
                    "devices",
                )
                .filter(device_status_change::Column::LicenseId.is_in(batch.iter().cloned()))
                .filter(device_status_change::Column::Status.eq(DeviceStatus::Active))
                .filter(device_status_change::Column::At.gte(day.from))
                .group_by(device_status_change::Column::LicenseId)
                .into_tuple()
                .all(&self.db)
                .await?;
            for (license_id, devices) in counts {
                let Some((license, _)) = licenses.get(&license_id) else {
                    continue;
                };
                let series = license_id.clone();
                if let Some(finding) =
                    detectors::activation_burst(&label(license), &series, license.max_activations, devices, day)
                {
                    flags.push(Flag {
                        vendor_id: license.vendor_id.clone(),
                        license_id: Some(license_id),
                        device_id: None,
                        meter: None,
                        finding,
                    });
                }
            }
        }
        let device_ids: Vec<String> = activated.into_iter().map(|(_, d)| d).collect();
        let mut fingerprints: BTreeSet<(String, String)> = BTreeSet::new();
        for batch in device_ids.chunks(CHUNK) {
            let rows: Vec<(String, String)> = device::Entity::find()
                .select_only()
                .column(device::Column::VendorId)
                .column(device::Column::Fingerprint)
                .filter(device::Column::Id.is_in(batch.iter().cloned()))
                .into_tuple()
                .all(&self.db)
                .await?;
            fingerprints.extend(rows);
        }
        for (vendor_id, fingerprint) in fingerprints {
            let holders: Vec<(String, Option<String>)> = device::Entity::find()
                .select_only()
                .column(device::Column::LicenseId)
                .column(license::Column::CustomerId)
                .join(JoinType::InnerJoin, device::Relation::License.def())
                .filter(device::Column::VendorId.eq(&vendor_id))
                .filter(device::Column::Fingerprint.eq(&fingerprint))
                .filter(device::Column::Status.ne(DeviceStatus::Released))
                .into_tuple()
                .all(&self.db)
                .await?;
            let customers: BTreeSet<&String> = holders.iter().filter_map(|(_, c)| c.as_ref()).collect();
            let licenses: BTreeSet<String> = holders.iter().map(|(l, _)| l.clone()).collect();
            let licenses: Vec<String> = licenses.into_iter().collect();
            let customers = i64::try_from(customers.len()).unwrap_or(i64::MAX);
            if let Some(finding) = detectors::shared_fingerprint(&fingerprint, &fingerprint, customers, &licenses, now)
            {
                flags.push(Flag {
                    vendor_id,
                    license_id: None,
                    device_id: None,
                    meter: None,
                    finding,
                });
            }
        }
        Ok(())
    }

    /// FINGERPRINT_DRIFT over the devices with an observation seen since the watermark.
    pub(super) async fn drifts(&self, since: DateTime<Utc>, now: DateTime<Utc>, flags: &mut Vec<Flag>) -> Result<()> {
        let devices: Vec<String> = fingerprint_observation::Entity::find()
            .select_only()
            .column(fingerprint_observation::Column::DeviceId)
            .distinct()
            .filter(fingerprint_observation::Column::LastSeenAt.gt(since))
            .into_tuple()
            .all(&self.db)
            .await?;
        let day = Window {
            from: now - Duration::days(1),
            to: now,
        };
        for batch in devices.chunks(CHUNK) {
            let counts: Vec<(String, String, String, i64)> = fingerprint_observation::Entity::find()
                .select_only()
                .column(fingerprint_observation::Column::VendorId)
                .column(fingerprint_observation::Column::LicenseId)
                .column(fingerprint_observation::Column::DeviceId)
                .column_as(fingerprint_observation::Column::ComponentsHash.count(), "sets")
                .filter(fingerprint_observation::Column::DeviceId.is_in(batch.iter().cloned()))
                .filter(fingerprint_observation::Column::LastSeenAt.gte(day.from))
                .group_by(fingerprint_observation::Column::VendorId)
                .group_by(fingerprint_observation::Column::LicenseId)
                .group_by(fingerprint_observation::Column::DeviceId)
                .into_tuple()
                .all(&self.db)
                .await?;
            let licenses = load_licenses(&self.db, counts.iter().map(|c| c.1.clone())).await?;
            for (vendor_id, license_id, device_id, sets) in counts {
                let Some((license, _)) = licenses.get(&license_id) else {
                    continue;
                };
                let series = format!("{license_id}:{device_id}");
                if let Some(finding) = detectors::fingerprint_drift(&label(license), &device_id, &series, sets, day) {
                    flags.push(Flag {
                        vendor_id,
                        license_id: Some(license_id),
                        device_id: Some(device_id),
                        meter: None,
                        finding,
                    });
                }
            }
        }
        Ok(())
    }

    /// CLOCK_TAMPER (online) over the device series with a touched hour holding skewed records.
    pub(super) async fn clock_tampers(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
        flags: &mut Vec<Flag>,
    ) -> Result<()> {
        let candidates: Vec<(String, String, String, String)> = usage_hourly::Entity::find()
            .select_only()
            .column(usage_hourly::Column::VendorId)
            .column(usage_hourly::Column::LicenseId)
            .column(usage_hourly::Column::Meter)
            .column(usage_hourly::Column::DeviceId)
            .distinct()
            .filter(usage_hourly::Column::TouchedAt.gt(since))
            .filter(usage_hourly::Column::SkewedRecords.gt(0))
            .into_tuple()
            .all(&self.db)
            .await?;
        let day = Window {
            from: now - Duration::days(1),
            to: now,
        };
        for batch in candidates.chunks(CHUNK) {
            let licenses = load_licenses(&self.db, batch.iter().map(|c| c.1.clone())).await?;
            for (vendor_id, license_id, meter, device_id) in batch {
                let Some((license, _)) = licenses.get(license_id) else {
                    continue;
                };
                let skewed: Option<i64> = usage_hourly::Entity::find()
                    .select_only()
                    .column_as(sum_of(usage_hourly::Column::SkewedRecords), "skewed")
                    .filter(usage_hourly::Column::LicenseId.eq(license_id))
                    .filter(usage_hourly::Column::Meter.eq(meter))
                    .filter(usage_hourly::Column::DeviceId.eq(device_id))
                    .filter(usage_hourly::Column::Hour.gte(hour_start(day.from)))
                    .into_tuple::<Option<i64>>()
                    .one(&self.db)
                    .await?
                    .flatten();
                let license_label = label(license);
                let names = Names {
                    license: &license_label,
                    meter,
                };
                let series = format!("{license_id}:{meter}:{device_id}");
                if let Some(finding) = detectors::clock_tamper(names, device_id, &series, skewed.unwrap_or(0), day) {
                    flags.push(Flag {
                        vendor_id: vendor_id.clone(),
                        license_id: Some(license_id.clone()),
                        device_id: Some(device_id.clone()),
                        meter: Some(meter.clone()),
                        finding,
                    });
                }
            }
        }
        Ok(())
    }
}
