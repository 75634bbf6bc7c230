//! Idempotency keys: the first call with a key claims it and records its result; a retry with
//! the same input replays that result; the same key with other input is a conflict. Claiming is
//! one `INSERT ... ON CONFLICT DO NOTHING`, so concurrent retries serialise on the unique index.

use chrono::{DateTime, Utc};
use entity::idempotency_key;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use sha2::{Digest, Sha256};

use crate::{Error, Result, new_id};

/// The outcome of claiming a key.
pub(crate) enum Claim {
    /// First use: do the work, then [`complete`] this row.
    New { row_id: String },
    /// Seen before with the same input: answer with this result.
    Replay { result_id: String },
}

/// SHA-256 of the canonical JSON of a request (object keys sorted), in hex.
pub(crate) fn request_hash(request: &serde_json::Value) -> String {
    hex::encode(Sha256::digest(request.to_string().as_bytes()))
}

/// Claims `key` for `operation` inside the caller's transaction.
pub(crate) async fn claim(
    tx: &impl ConnectionTrait,
    vendor_id: &str,
    operation: &str,
    key: &str,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<Claim> {
    let row_id = new_id();
    let inserted = idempotency_key::Entity::insert(idempotency_key::ActiveModel {
        id: Set(row_id.clone()),
        vendor_id: Set(vendor_id.to_owned()),
        operation: Set(operation.to_owned()),
        key: Set(key.to_owned()),
        request_hash: Set(hash.to_owned()),
        result_id: Set(None),
        created_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([
            idempotency_key::Column::VendorId,
            idempotency_key::Column::Operation,
            idempotency_key::Column::Key,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(tx)
    .await?;
    if inserted == 1 {
        return Ok(Claim::New { row_id });
    }
    let existing = idempotency_key::Entity::find()
        .filter(idempotency_key::Column::VendorId.eq(vendor_id))
        .filter(idempotency_key::Column::Operation.eq(operation))
        .filter(idempotency_key::Column::Key.eq(key))
        .one(tx)
        .await?
        .ok_or_else(|| Error::Internal("idempotency row vanished".into()))?;
    if existing.request_hash != hash {
        return Err(Error::IdempotencyConflict);
    }
    let result_id = existing
        .result_id
        .ok_or_else(|| Error::Internal("idempotency row has no result".into()))?;
    Ok(Claim::Replay { result_id })
}

/// Records the result of a newly claimed key, in the same transaction as the work.
pub(crate) async fn complete(tx: &impl ConnectionTrait, row_id: &str, result_id: &str) -> Result<()> {
    idempotency_key::Entity::update_many()
        .col_expr(idempotency_key::Column::ResultId, Some(result_id.to_owned()).into())
        .filter(idempotency_key::Column::Id.eq(row_id))
        .exec(tx)
        .await?;
    Ok(())
}
