//! Relay-style connections (`edges { cursor node }`, `nodes`, `pageInfo`, `totalCount`) over
//! the domain's keyset pages, using async-graphql's connection types. Cursors are the row id,
//! base64url-encoded and opaque to clients.

use async_graphql::connection::{CursorType, Edge, EmptyFields};
use async_graphql::{Context, OutputType, SimpleObject};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use domain::page::{Page, PageRequest};

use crate::graphql::error::{ApiError, ApiResult, ErrorCode};

/// A row id as a cursor.
pub struct IdCursor(pub String);

impl CursorType for IdCursor {
    type Error = &'static str;

    fn decode_cursor(s: &str) -> Result<Self, Self::Error> {
        let raw = URL_SAFE_NO_PAD.decode(s.as_bytes()).map_err(|_| "not base64url")?;
        String::from_utf8(raw).map(Self).map_err(|_| "not text")
    }

    fn encode_cursor(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.as_bytes())
    }
}

/// The count every connection carries.
#[derive(SimpleObject)]
pub struct TotalCount {
    /// How many nodes match in all (counted only when selected).
    pub total_count: i64,
}

/// A page of `T`s, named `<T>Connection` with `<T>Edge` edges.
pub type Connection<T> = async_graphql::connection::Connection<IdCursor, T, TotalCount, EmptyFields>;

/// Builds a connection from a page; `id` gives each row's id for its cursor.
pub fn from_page<M, T: OutputType>(page: Page<M>, id: impl Fn(&M) -> &str, node: impl Fn(M) -> T) -> Connection<T> {
    let total_count = page.total_count.map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX));
    let mut connection = Connection::with_additional_fields(false, page.has_next_page, TotalCount { total_count });
    connection.edges = page
        .items
        .into_iter()
        .map(|item| Edge::new(IdCursor(id(&item).to_owned()), node(item)))
        .collect();
    connection
}

/// Checks `first` and decodes `after` into a page request; counts only when the query selects
/// `totalCount`.
///
/// # Errors
/// `INVALID_INPUT` for `first` outside 1-100 or a cursor this server did not make.
pub fn page_request(ctx: &Context<'_>, first: Option<i32>, after: Option<String>) -> ApiResult<PageRequest> {
    let after = after
        .map(|cursor| {
            IdCursor::decode_cursor(&cursor)
                .map(|c| c.0)
                .map_err(|_| ApiError::new(ErrorCode::InvalidInput, "after is not a cursor from this API"))
        })
        .transpose()?;
    let want_total = ctx.look_ahead().field("totalCount").exists();
    Ok(PageRequest::new(first, after, want_total)?)
}
