//! When each API token was last used, without a write on the hot path: authentication notes
//! the time in a small bounded map owned by the [`Domain`], and
//! [`Domain::flush_token_usage`] writes every noted time in one batched `UPDATE` (the API
//! calls it every `TOKEN_USAGE_FLUSH_SECS` and at shutdown). A flush that fails keeps its
//! times for the next one; a time never moves `last_used_at` backwards (another process may
//! have written a later one).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use entity::api_token;
use sea_orm::sea_query::{CaseStatement, Expr, ExprTrait as _};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::{Domain, Result};

/// Most tokens noted between two flushes; a token beyond it is noted at the next flush's
/// period instead (the map never grows past this, whatever calls authenticate).
const MAX_PENDING: usize = 100_000;
/// Tokens written per statement (each binds four values: three in the CASE, one in the IN list;
/// 300 stays far below the SQLite and PostgreSQL parameter limits).
const CHUNK: usize = 300;

/// Last-use times noted since the last flush, by token id.
#[derive(Default)]
pub(crate) struct TokenUsage {
    pending: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl TokenUsage {
    /// Notes that `token_id` was used at `at`.
    pub(crate) fn note(&self, token_id: &str, at: DateTime<Utc>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(seen) = pending.get_mut(token_id) {
            *seen = Ord::max(*seen, at);
        } else if pending.len() < MAX_PENDING {
            pending.insert(token_id.to_owned(), at);
        }
    }

    fn take(&self) -> HashMap<String, DateTime<Utc>> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn put_back(&self, entries: &[(String, DateTime<Utc>)]) {
        for (id, at) in entries {
            self.note(id, *at);
        }
    }
}

impl Domain {
    /// Writes the last-use times noted since the last flush; returns how many tokens.
    ///
    /// # Errors
    /// The database error; the times not written are kept for the next flush.
    pub async fn flush_token_usage(&self) -> Result<usize> {
        let entries: Vec<(String, DateTime<Utc>)> = self.token_usage.take().into_iter().collect();
        for (done, chunk) in entries.chunks(CHUNK).enumerate() {
            let mut case = CaseStatement::new();
            for (id, at) in chunk {
                let later = Expr::col(api_token::Column::LastUsedAt)
                    .is_null()
                    .or(Expr::col(api_token::Column::LastUsedAt).lt(*at));
                case = case.case(
                    Expr::col(api_token::Column::Id).eq(id.as_str()).and(later),
                    Expr::value(*at),
                );
            }
            let written = api_token::Entity::update_many()
                .col_expr(
                    api_token::Column::LastUsedAt,
                    case.finally(Expr::col(api_token::Column::LastUsedAt)).into(),
                )
                .filter(api_token::Column::Id.is_in(chunk.iter().map(|(id, _)| id.as_str())))
                .exec(&self.writer)
                .await;
            if let Err(err) = written {
                self.token_usage.put_back(&entries[done * CHUNK..]);
                return Err(err.into());
            }
        }
        Ok(entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_keep_the_latest_time_and_stay_bounded() {
        let usage = TokenUsage::default();
        let t0 = DateTime::from_timestamp(1_000, 0).unwrap_or_default();
        let t1 = DateTime::from_timestamp(2_000, 0).unwrap_or_default();
        usage.note("a", t1);
        usage.note("a", t0);
        assert_eq!(usage.take().get("a"), Some(&t1));
        assert!(usage.take().is_empty(), "a flush takes everything");
        for i in 0..MAX_PENDING + 10 {
            usage.note(&i.to_string(), t0);
        }
        assert_eq!(usage.take().len(), MAX_PENDING);
    }
}
