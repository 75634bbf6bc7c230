//! Keyset pagination over time-ordered ids: what a Relay connection needs from a query.

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};

use crate::{Error, Result};

/// Page size when the caller gives none.
pub const DEFAULT_PAGE_SIZE: u64 = 25;
/// Largest page a caller may ask for.
pub const MAX_PAGE_SIZE: u64 = 100;

/// Which end of the id order a listing starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Oldest first (catalog, customers, licenses, devices).
    OldestFirst,
    /// Newest first (audit events, alerts, anomalies, emails).
    NewestFirst,
}

/// A checked page request.
#[derive(Debug, Clone)]
pub struct PageRequest {
    /// Rows to return, 1-100.
    pub first: u64,
    /// Return rows after this id.
    pub after: Option<String>,
    /// Whether to count all matching rows.
    pub want_total: bool,
}

impl PageRequest {
    /// Checks `first` (default 25, 1-100).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `first` is out of range.
    pub fn new(first: Option<i32>, after: Option<String>, want_total: bool) -> Result<Self> {
        let first = match first {
            None => DEFAULT_PAGE_SIZE,
            Some(n) if (1..=MAX_PAGE_SIZE as i32).contains(&n) => n.unsigned_abs().into(),
            Some(_) => {
                return Err(Error::InvalidInput(format!(
                    "first must be between 1 and {MAX_PAGE_SIZE}"
                )));
            }
        };
        Ok(Self {
            first,
            after,
            want_total,
        })
    }
}

/// One page of rows.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The rows, in listing order.
    pub items: Vec<T>,
    /// Whether more rows follow.
    pub has_next_page: bool,
    /// All matching rows, when asked for.
    pub total_count: Option<u64>,
}

/// Runs `select` as one page ordered by `id`, starting after `request.after`.
///
/// # Errors
/// The database error.
pub async fn fetch<E, C>(
    db: &impl ConnectionTrait,
    select: Select<E>,
    id: C,
    request: &PageRequest,
    order: Order,
) -> Result<Page<E::Model>>
where
    E: EntityTrait,
    E::Model: Send + Sync,
    C: ColumnTrait,
{
    let total_count = if request.want_total {
        Some(select.clone().count(db).await?)
    } else {
        None
    };
    let mut select = select;
    if let Some(after) = &request.after {
        select = match order {
            Order::OldestFirst => select.filter(id.gt(after.as_str())),
            Order::NewestFirst => select.filter(id.lt(after.as_str())),
        };
    }
    select = match order {
        Order::OldestFirst => select.order_by_asc(id),
        Order::NewestFirst => select.order_by_desc(id),
    };
    let mut items = select.limit(request.first + 1).all(db).await?;
    let has_next_page = items.len() as u64 > request.first;
    items.truncate(usize::try_from(request.first).unwrap_or(usize::MAX));
    Ok(Page {
        items,
        has_next_page,
        total_count,
    })
}
