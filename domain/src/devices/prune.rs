//! The cap on device rows per license: devices holding a seat (or dead, or checked out) are
//! always kept; of the released ones a license keeps the newest [`released_kept`], so an
//! activate/deactivate loop over ever new fingerprints cannot grow the database without bound.
//!
//! A released row that anything still points to is kept whatever its age: usage records,
//! hourly usage and usage series (the consumption evidence), anomalies and alerts. So that a
//! loop that records usage before each deactivation cannot grow the table either, a license
//! holding more than twice [`released_kept`] released rows after pruning takes no new device
//! row: the activation is refused (ACTIVATION_LIMIT_REACHED) until staff look. The pruned
//! device's own history (its status changes and fingerprint observations) goes with it; the
//! audit log keeps its events, which name the device id as text.

use entity::enums::DeviceStatus;
use entity::{alert, anomaly, device, device_status_change, fingerprint_observation, license};
use entity::{usage_hourly, usage_record, usage_series};
use sea_orm::sea_query::{Query, SelectStatement};
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::{Error, Result};

/// The fewest released rows a license keeps (for small seat caps and unlimited licenses).
pub const MIN_RELEASED_KEPT: u64 = 100;

/// How many released device rows a license with this seat cap keeps: four per seat, at least
/// [`MIN_RELEASED_KEPT`].
#[must_use]
pub fn released_kept(max_activations: Option<i32>) -> u64 {
    let per_seats = max_activations.map_or(0, |max| u64::try_from(max).unwrap_or(0).saturating_mul(4));
    per_seats.max(MIN_RELEASED_KEPT)
}

/// The non-null `device_id`s of `column` in `table`, as a subquery.
fn referenced<T: EntityTrait>(device_id: T::Column, vendor_id: T::Column, vendor: &str) -> SelectStatement {
    Query::select()
        .column(device_id)
        .from(T::default())
        .and_where(device_id.is_not_null())
        .and_where(vendor_id.eq(vendor))
        .to_owned()
}

/// Deletes the oldest released, unreferenced device rows of `license` beyond the cap, inside
/// the transaction that holds the license row (before a new device row is added). Returns how
/// many went.
///
/// # Errors
/// [`Error::ActivationLimitReached`] when more than twice the cap of released rows are left
/// (all of them evidence); database errors.
pub(super) async fn prune_released(tx: &DatabaseTransaction, license: &license::Model) -> Result<u64> {
    let keep = released_kept(license.max_activations);
    let released = device::Entity::find()
        .filter(device::Column::LicenseId.eq(&license.id))
        .filter(device::Column::Status.eq(DeviceStatus::Released))
        .count(tx)
        .await?;
    if released <= keep {
        return Ok(0);
    }
    let vendor = license.vendor_id.as_str();
    let doomed: Vec<String> = device::Entity::find()
        .select_only()
        .column(device::Column::Id)
        .filter(device::Column::LicenseId.eq(&license.id))
        .filter(device::Column::Status.eq(DeviceStatus::Released))
        .filter(device::Column::Id.not_in_subquery(referenced::<usage_record::Entity>(
            usage_record::Column::DeviceId,
            usage_record::Column::VendorId,
            vendor,
        )))
        .filter(device::Column::Id.not_in_subquery(referenced::<usage_hourly::Entity>(
            usage_hourly::Column::DeviceId,
            usage_hourly::Column::VendorId,
            vendor,
        )))
        .filter(device::Column::Id.not_in_subquery(referenced::<usage_series::Entity>(
            usage_series::Column::DeviceId,
            usage_series::Column::VendorId,
            vendor,
        )))
        .filter(device::Column::Id.not_in_subquery(referenced::<anomaly::Entity>(
            anomaly::Column::DeviceId,
            anomaly::Column::VendorId,
            vendor,
        )))
        .filter(device::Column::Id.not_in_subquery(referenced::<alert::Entity>(
            alert::Column::DeviceId,
            alert::Column::VendorId,
            vendor,
        )))
        .order_by_asc(device::Column::ReleasedAt)
        .order_by_asc(device::Column::Id)
        .limit(released - keep)
        .into_tuple()
        .all(tx)
        .await?;
    let left = released - u64::try_from(doomed.len()).unwrap_or(0);
    if left > keep.saturating_mul(2) {
        return Err(Error::ActivationLimitReached(format!(
            "this license keeps {left} released devices that usage records, anomalies or alerts still point to, \
             more than it may hold; no new device can be added until the vendor's staff review them"
        )));
    }
    if doomed.is_empty() {
        return Ok(0);
    }
    device_status_change::Entity::delete_many()
        .filter(device_status_change::Column::DeviceId.is_in(doomed.iter().map(String::as_str)))
        .exec(tx)
        .await?;
    fingerprint_observation::Entity::delete_many()
        .filter(fingerprint_observation::Column::DeviceId.is_in(doomed.iter().map(String::as_str)))
        .exec(tx)
        .await?;
    let deleted = device::Entity::delete_many()
        .filter(device::Column::Id.is_in(doomed.iter().map(String::as_str)))
        .exec(tx)
        .await?;
    Ok(deleted.rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_license_keeps_four_released_rows_per_seat_and_at_least_a_hundred() {
        assert_eq!(released_kept(None), MIN_RELEASED_KEPT);
        assert_eq!(released_kept(Some(1)), 100);
        assert_eq!(released_kept(Some(50)), 200);
        assert_eq!(released_kept(Some(-3)), 100);
    }
}
