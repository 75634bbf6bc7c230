//! USAGE_WHILE_DEAD: usage dated inside a time its device was dead (silent past its heartbeat
//! deadline) or released, read from the device's status history (`device_status_changes`).
//! Flagged by the call that receives the records, in its transaction: a device that keeps
//! working while it blocks its heartbeats is the case this catches.

use chrono::{DateTime, Duration, Utc};
use entity::enums::{AnomalyKind, DeviceStatus};
use entity::{anomaly, device, device_status_change};
use sea_orm::{ColumnTrait as _, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder};
use serde_json::json;

use super::counting::NewRecord;
use crate::Result;
use crate::anomalies::{self, NewAnomaly};

/// Clock skew allowed on both sides of a dead or released span, on top of the heartbeat
/// interval.
const SKEW_SECONDS: i64 = 120;

/// The spans in which a device was not active: `(from, until, status)`, `until = None` while it
/// still is.
fn inactive_spans(
    history: &[device_status_change::Model],
) -> Vec<(DateTime<Utc>, Option<DateTime<Utc>>, DeviceStatus)> {
    let mut spans = Vec::new();
    let mut open: Option<(DateTime<Utc>, DeviceStatus)> = None;
    for change in history {
        match (change.status, open) {
            (DeviceStatus::Dead | DeviceStatus::Released, None) => open = Some((change.at, change.status)),
            (DeviceStatus::Dead | DeviceStatus::Released, Some(_)) => {}
            (_, Some((from, status))) => {
                spans.push((from, Some(change.at), status));
                open = None;
            }
            (_, None) => {}
        }
    }
    if let Some((from, status)) = open {
        spans.push((from, None, status));
    }
    spans
}

/// Flags the first span of `device`'s history that holds some of `records` (beyond the
/// heartbeat interval plus skew from its edges); one anomaly per device and span.
pub(super) async fn flag(
    tx: &DatabaseTransaction,
    device: &device::Model,
    heartbeat_interval_seconds: Option<i64>,
    records: &[&NewRecord],
    now: DateTime<Utc>,
) -> Result<Option<anomaly::Model>> {
    let history = device_status_change::Entity::find()
        .filter(device_status_change::Column::DeviceId.eq(&device.id))
        .order_by_asc(device_status_change::Column::At)
        .all(tx)
        .await?;
    let margin = Duration::seconds(heartbeat_interval_seconds.unwrap_or(0) + SKEW_SECONDS);
    for (from, until, status) in inactive_spans(&history) {
        let inside: Vec<&&NewRecord> = records
            .iter()
            .filter(|r| r.recorded_at > from + margin && until.is_none_or(|until| r.recorded_at < until - margin))
            .collect();
        let (Some(first), Some(last)) = (
            inside.iter().map(|r| r.recorded_at).min(),
            inside.iter().map(|r| r.recorded_at).max(),
        ) else {
            continue;
        };
        let quantity: i64 = inside.iter().map(|r| r.quantity).sum();
        let state = if status == DeviceStatus::Dead {
            "dead"
        } else {
            "released"
        };
        let until_text = until.map_or_else(|| "now".to_owned(), |at| at.to_rfc3339());
        let meters: std::collections::BTreeSet<&str> = inside.iter().map(|r| r.meter.as_str()).collect();
        let new = NewAnomaly {
            vendor_id: &device.vendor_id,
            license_id: Some(&device.license_id),
            device_id: Some(&device.id),
            meter: (meters.len() == 1).then(|| meters.iter().next().copied()).flatten(),
            kind: AnomalyKind::UsageWhileDead,
            explanation: format!(
                "Device {} recorded {} usage records ({quantity} units, {} to {}) while it was {state} from {} until {until_text} (allowing {} s of heartbeat interval and clock skew).",
                device.id,
                inside.len(),
                first.to_rfc3339(),
                last.to_rfc3339(),
                from.to_rfc3339(),
                margin.num_seconds()
            ),
            evidence: json!({
                "detector": "usage_while_dead",
                "device_id": device.id,
                "status": status,
                "span": { "from": from, "until": until },
                "margin_seconds": margin.num_seconds(),
                "records": inside.len(),
                "quantity": quantity,
                "meters": meters,
                "first_recorded_at": first,
                "last_recorded_at": last,
            }),
            dedupe_key: format!("USAGE_WHILE_DEAD:{}:{}", device.id, from.timestamp_micros()),
        };
        return Ok(Some(anomalies::flag(tx, new, now).await?.anomaly));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(status: DeviceStatus, minute: i64) -> device_status_change::Model {
        device_status_change::Model {
            id: minute.to_string(),
            vendor_id: "v".into(),
            license_id: "l".into(),
            device_id: "d".into(),
            status,
            at: DateTime::UNIX_EPOCH + Duration::minutes(minute),
        }
    }

    #[test]
    fn spans_run_from_a_death_or_release_to_the_next_activation() {
        let at = |m| DateTime::UNIX_EPOCH + Duration::minutes(m);
        let history = [
            change(DeviceStatus::Active, 0),
            change(DeviceStatus::Dead, 10),
            change(DeviceStatus::Released, 15),
            change(DeviceStatus::Active, 30),
            change(DeviceStatus::Released, 50),
        ];
        assert_eq!(
            inactive_spans(&history),
            vec![
                (at(10), Some(at(30)), DeviceStatus::Dead),
                (at(50), None, DeviceStatus::Released)
            ]
        );
        assert!(inactive_spans(&[change(DeviceStatus::Active, 0)]).is_empty());
    }
}
