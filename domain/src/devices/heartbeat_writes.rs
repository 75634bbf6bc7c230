//! Heartbeats written together. The common heartbeat (a seated, active device within its
//! deadline) is one conditional row update; under load many arrive at once, and writing them
//! one statement each queues them behind SQLite's one writer. So each waits in a queue, and
//! one task writes everything queued so far in a single `UPDATE ... RETURNING` while the next
//! batch gathers: no timer, no wait when the server is idle.
//!
//! Every heartbeat is durable before it is answered: a batch is answered only once its
//! statement has committed. A crash (SIGKILL included) therefore loses no acknowledged
//! heartbeat, and cannot bring a DEAD verdict forward. (A write kept only in memory could:
//! with the deadline at last seen + two intervals, losing an on-schedule heartbeat leaves the
//! stored deadline at exactly the device's next due time.)
//!
//! A device whose row no longer matches the conditions (dead, checked out, released by
//! someone else meanwhile) comes back as `None`, and the caller takes the full path.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use entity::device;
use entity::enums::DeviceStatus;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, IntoIden as _, TableRef, ValueTuple};
use sea_orm::{ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryTrait};
use tokio::sync::oneshot;

use crate::{Error, Result};

/// Most heartbeats one statement writes.
const MAX_BATCH: usize = 200;

/// A heartbeat waiting to be written.
struct Beat {
    device_id: String,
    vendor_id: String,
    at: DateTime<Utc>,
    deadline: Option<DateTime<Utc>>,
    written: oneshot::Sender<Result<Option<device::Model>>>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Beat>,
    /// Whether a task is writing batches now (it takes what arrives meanwhile).
    writing: bool,
}

/// The heartbeat queue (one per process, shared by every clone of the domain).
#[derive(Default)]
pub struct HeartbeatWrites {
    queue: Mutex<Queue>,
}

impl HeartbeatWrites {
    /// Writes a device's heartbeat at `at` with its new deadline, if the device is seated,
    /// active and within its deadline; answers its row after the write, or `None` when it did
    /// not match.
    ///
    /// # Errors
    /// Database errors.
    pub(crate) async fn write(
        self: &Arc<Self>,
        writer: &DatabaseConnection,
        device_id: &str,
        vendor_id: &str,
        at: DateTime<Utc>,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<Option<device::Model>> {
        let (written, answer) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            queue.waiting.push(Beat {
                device_id: device_id.to_owned(),
                vendor_id: vendor_id.to_owned(),
                at,
                deadline,
                written,
            });
            !std::mem::replace(&mut queue.writing, true)
        };
        if start {
            // A task of its own: a caller that goes away must not take the batch with it.
            tokio::spawn(Arc::clone(self).write_batches(writer.clone()));
        }
        answer
            .await
            .map_err(|_| Error::Internal("the heartbeat writer stopped".into()))?
    }

    /// Writes batches until the queue is empty.
    async fn write_batches(self: Arc<Self>, writer: DatabaseConnection) {
        // Should this task panic, the queue must not stay "being written" forever.
        struct Unwinding<'a>(Option<&'a Mutex<Queue>>);
        impl Drop for Unwinding<'_> {
            fn drop(&mut self) {
                if let Some(queue) = self.0 {
                    let mut queue = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    queue.writing = false;
                    // Their senders drop with them: each caller gets "the writer stopped".
                    queue.waiting.clear();
                }
            }
        }
        let mut unwinding = Unwinding(Some(&self.queue));
        loop {
            let batch = {
                let mut queue = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if queue.waiting.is_empty() {
                    queue.writing = false;
                    unwinding.0 = None;
                    return;
                }
                take_batch(&mut queue.waiting)
            };
            match write_batch(&writer, &batch).await {
                Ok(rows) => {
                    let mut rows: std::collections::HashMap<String, device::Model> =
                        rows.into_iter().map(|row| (row.id.clone(), row)).collect();
                    for beat in batch {
                        let _ = beat.written.send(Ok(rows.remove(&beat.device_id)));
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, heartbeats = batch.len(), "writing heartbeats failed");
                    for beat in batch {
                        let _ = beat.written.send(Err(Error::Db(DbErr::Custom(err.to_string()))));
                    }
                }
            }
        }
    }
}

/// Takes up to [`MAX_BATCH`] beats, one per device (a device's second beat waits for the
/// next batch, so each answer is its own write).
fn take_batch(waiting: &mut Vec<Beat>) -> Vec<Beat> {
    let mut devices = HashSet::new();
    let mut batch = Vec::new();
    let mut later = Vec::new();
    for beat in waiting.drain(..) {
        if batch.len() < MAX_BATCH && devices.insert(beat.device_id.clone()) {
            batch.push(beat);
        } else {
            later.push(beat);
        }
    }
    *waiting = later;
    batch
}

/// One statement: each beat's device gets its own last-seen time and deadline, if it is
/// still seated, active and within its deadline at that beat's time. The beats are a `VALUES`
/// list joined on the primary key (`UPDATE ... FROM`, on SQLite and PostgreSQL alike), so each
/// row is found by one index lookup.
async fn write_batch(writer: &DatabaseConnection, batch: &[Beat]) -> Result<Vec<device::Model>, DbErr> {
    let beats = Alias::new("beats");
    // VALUES columns are named column1, column2, ... on both databases.
    let column = |n: &str| Expr::col((beats.clone(), Alias::new(n)));
    let rows = batch
        .iter()
        .map(|beat| {
            ValueTuple::Many(vec![
                beat.device_id.clone().into(),
                beat.at.into(),
                beat.deadline.into(),
                beat.vendor_id.clone().into(),
            ])
        })
        .collect();
    let mut update = device::Entity::update_many()
        .col_expr(device::Column::LastSeenAt, column("column2"))
        .col_expr(device::Column::HeartbeatDeadlineAt, column("column3"))
        .col_expr(device::Column::UpdatedAt, column("column2"))
        .filter(ExprTrait::eq(
            Expr::col((device::Entity, device::Column::Id)),
            column("column1"),
        ))
        .filter(ExprTrait::eq(
            Expr::col((device::Entity, device::Column::VendorId)),
            column("column4"),
        ))
        .filter(device::Column::Status.eq(DeviceStatus::Active))
        .filter(device::Column::HoldsSeat.eq(true))
        .filter(
            Condition::any()
                .add(device::Column::HeartbeatDeadlineAt.is_null())
                .add(ExprTrait::gte(
                    Expr::col((device::Entity, device::Column::HeartbeatDeadlineAt)),
                    column("column2"),
                )),
        );
    QueryTrait::query(&mut update).from(TableRef::ValuesList(rows, beats.into_iden()));
    update.exec_with_returning(writer).await
}
