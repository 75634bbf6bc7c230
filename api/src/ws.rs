//! The subscription websocket (`/graphql/ws`, `graphql-transport-ws` or the older
//! `graphql-ws`): served with `actix-ws` and async-graphql's protocol state machine
//! ([`async_graphql::http::WebSocket`]), with every limit applied before anything is buffered.
//!
//! - A frame, and a message however many continuation frames it spans, is at most
//!   [`MAX_MESSAGE_BYTES`]; past it the socket closes (1009) and nothing more is read.
//! - `connection_init` must come within [`CONNECTION_INIT_TIMEOUT`], else close 4408.
//! - At most [`MAX_SOCKETS_PER_ADDRESS`] open sockets per client address (and
//!   [`MAX_SOCKETS`] in all); past it the upgrade is refused with 429 `RATE_LIMITED`.
//! - At most [`MAX_SUBSCRIPTIONS_PER_SOCKET`] subscriptions at once on one socket.
//! - One client message at a time is handed to the protocol (it reads the next only when it
//!   has taken the last), so a fast sender waits on TCP instead of filling memory.
//! - A transport ping every 5 s; a client silent on pings for 10 s is dropped.

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError, Session};
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, WebSocket, WebSocketProtocols as Protocols, WsMessage};
use async_graphql::parser::types::OperationType;
use futures::StreamExt as _;

use crate::graphql::AppSchema;
use crate::graphql::error::ErrorCode;

/// Largest frame, and largest message (all its continuation frames together), a client may send.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// How long a socket may stay open without `connection_init`.
pub const CONNECTION_INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Open sockets one client address may hold.
pub const MAX_SOCKETS_PER_ADDRESS: usize = 16;
/// Open sockets the process holds at most.
pub const MAX_SOCKETS: usize = 10_000;
/// Subscriptions one socket may run at once.
pub const MAX_SUBSCRIPTIONS_PER_SOCKET: usize = 8;
/// The close code for a missing `connection_init` (graphql-transport-ws).
pub const INIT_TIMEOUT_CLOSE_CODE: u16 = 4408;
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Longest a send to the client may wait (a client that stops reading fills the socket's
/// buffer; it is dropped rather than allowed to hold the loop, and its slot, for ever).
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The open sockets per client address (an address is listed only while it holds one, so the
/// map is never larger than the number of open sockets). Shared by clones.
#[derive(Clone, Default)]
pub struct Sockets(Arc<Mutex<HashMap<String, usize>>>);

/// One open socket of an address, counted until dropped.
pub struct SocketSlot {
    sockets: Sockets,
    address: String,
}

impl Sockets {
    /// A slot for one more socket from `address`, or `None` past the caps.
    #[must_use]
    pub fn open(&self, address: &str) -> Option<SocketSlot> {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let total: usize = open.values().sum();
        let mine = open.get(address).copied().unwrap_or(0);
        if total >= MAX_SOCKETS || mine >= MAX_SOCKETS_PER_ADDRESS {
            return None;
        }
        open.insert(address.to_owned(), mine + 1);
        Some(SocketSlot {
            sockets: self.clone(),
            address: address.to_owned(),
        })
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut open = self.sockets.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// Upgrades `req` to a subscription socket running on `schema`; `on_init` turns the
/// `connection_init` payload into the connection's data (or refuses it, closing the socket).
///
/// # Errors
/// 400 when the client offers no GraphQL websocket protocol or the upgrade is malformed.
pub fn start<OnInit, InitFuture>(
    req: &HttpRequest,
    payload: web::Payload,
    schema: AppSchema,
    slot: SocketSlot,
    on_init: OnInit,
) -> actix_web::Result<HttpResponse>
where
    OnInit: FnOnce(serde_json::Value) -> InitFuture + Send + 'static,
    InitFuture: Future<Output = async_graphql::Result<async_graphql::Data>> + Send + 'static,
{
    let protocol = req
        .headers()
        .get_all(actix_web::http::header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|p| Protocols::from_str(p.trim()).ok())
        .ok_or_else(|| actix_web::error::ErrorBadRequest("offer the graphql-transport-ws protocol"))?;
    let (response, session, messages) = actix_ws::handle_with_protocols(req, payload, &ALL_WEBSOCKET_PROTOCOLS)?;
    let messages = messages
        .max_frame_size(MAX_MESSAGE_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE_BYTES);
    let executor = SubscriptionsOnly {
        schema,
        slots: Arc::new(tokio::sync::Semaphore::new(MAX_SUBSCRIPTIONS_PER_SOCKET)),
    };
    actix_web::rt::spawn(serve(session, messages, protocol, executor, on_init, slot));
    Ok(response)
}

/// Why a client message ended the socket.
fn close_for(err: &ProtocolError) -> CloseReason {
    let too_big = matches!(err, ProtocolError::Overflow)
        || matches!(err, ProtocolError::Io(e) if e.to_string().contains("maximum continuation size"));
    if too_big {
        CloseReason {
            code: CloseCode::Size,
            description: Some(format!("messages are limited to {} KiB", MAX_MESSAGE_BYTES / 1024)),
        }
    } else {
        CloseReason {
            code: CloseCode::Protocol,
            description: Some("malformed websocket frame".into()),
        }
    }
}

/// Runs one socket until either side ends it.
async fn serve<OnInit, InitFuture>(
    mut session: Session,
    mut messages: AggregatedMessageStream,
    protocol: Protocols,
    executor: SubscriptionsOnly,
    on_init: OnInit,
    slot: SocketSlot,
) where
    OnInit: FnOnce(serde_json::Value) -> InitFuture + Send + 'static,
    InitFuture: Future<Output = async_graphql::Result<async_graphql::Data>> + Send + 'static,
{
    let _slot = slot;
    let initialised = Arc::new(AtomicBool::new(false));
    let on_init = {
        let initialised = initialised.clone();
        move |payload: serde_json::Value| {
            initialised.store(true, Ordering::SeqCst);
            on_init(payload)
        }
    };
    // One client message in flight to the protocol at a time: the next is read from the socket
    // only once the protocol has taken this one.
    let (to_protocol, mut from_client) = tokio::sync::mpsc::channel::<Bytes>(1);
    let input = futures::stream::poll_fn(move |cx| from_client.poll_recv(cx));
    let mut protocol_messages = Box::pin(WebSocket::new(executor, input, protocol).on_connection_init(on_init));
    let mut pending: Option<Bytes> = None;
    let init_deadline = tokio::time::sleep(CONNECTION_INIT_TIMEOUT);
    tokio::pin!(init_deadline);
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT_INTERVAL, HEARTBEAT_INTERVAL);
    let mut last_heard = Instant::now();
    let close = loop {
        tokio::select! {
            message = messages.recv(), if pending.is_none() => match message {
                Some(Ok(AggregatedMessage::Text(text))) => pending = Some(text.into_bytes()),
                Some(Ok(AggregatedMessage::Binary(bytes))) => pending = Some(bytes),
                Some(Ok(AggregatedMessage::Ping(bytes))) => {
                    last_heard = Instant::now();
                    if !sent(session.pong(&bytes)).await {
                        return;
                    }
                }
                Some(Ok(AggregatedMessage::Pong(_))) => last_heard = Instant::now(),
                Some(Ok(AggregatedMessage::Close(_))) | None => break None,
                Some(Err(err)) => break Some(close_for(&err)),
            },
            permit = to_protocol.reserve(), if pending.is_some() => match (permit, pending.take()) {
                (Ok(permit), Some(message)) => permit.send(message),
                _ => break None,
            },
            out = protocol_messages.next() => match out {
                Some(WsMessage::Text(text)) => {
                    if !sent(session.text(text)).await {
                        return;
                    }
                }
                Some(WsMessage::Close(code, reason)) => break Some(CloseReason {
                    code: code.into(),
                    description: Some(reason),
                }),
                None => break Some(CloseCode::Normal.into()),
            },
            () = &mut init_deadline, if !initialised.load(Ordering::SeqCst) => break Some(CloseReason {
                code: INIT_TIMEOUT_CLOSE_CODE.into(),
                description: Some("Connection initialisation timeout".into()),
            }),
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > CLIENT_TIMEOUT || !sent(session.ping(b"")).await {
                    break None;
                }
            }
        }
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, session.close(close)).await;
}

/// Whether a send to the client went out within [`SEND_TIMEOUT`].
async fn sent<E>(send: impl Future<Output = Result<(), E>>) -> bool {
    matches!(tokio::time::timeout(SEND_TIMEOUT, send).await, Ok(Ok(())))
}

/// The websocket's executor: subscriptions only, at most [`MAX_SUBSCRIPTIONS_PER_SOCKET`] at
/// once. Queries and mutations go to `POST /graphql`, where the timeout, the document cache
/// and error masking apply.
#[derive(Clone)]
struct SubscriptionsOnly {
    schema: AppSchema,
    /// A permit per running subscription of this socket, held by its stream.
    slots: Arc<tokio::sync::Semaphore>,
}

/// What a query or mutation sent over the socket is told.
const SUBSCRIPTIONS_ONLY: &str =
    "only subscriptions run over /graphql/ws; send queries and mutations with POST /graphql";

fn refusal(code: ErrorCode, message: &str) -> async_graphql::Response {
    async_graphql::Response::from_errors(vec![code.server_error(message)])
}

impl async_graphql::Executor for SubscriptionsOnly {
    async fn execute(&self, _request: async_graphql::Request) -> async_graphql::Response {
        refusal(ErrorCode::InvalidInput, SUBSCRIPTIONS_ONLY)
    }

    fn execute_stream(
        &self,
        mut request: async_graphql::Request,
        session_data: Option<Arc<async_graphql::Data>>,
    ) -> futures::stream::BoxStream<'static, async_graphql::Response> {
        let operation = request.operation_name.clone();
        // A document that does not parse goes on, for the schema's own error.
        let other_than_subscription = request.parsed_query().is_ok_and(|document| {
            document.operations.iter().any(|(name, op)| {
                op.node.ty != OperationType::Subscription
                    && (operation.is_none() || name.map(|n| n.as_str()) == operation.as_deref())
            })
        });
        if other_than_subscription {
            return futures::stream::once(async { refusal(ErrorCode::InvalidInput, SUBSCRIPTIONS_ONLY) }).boxed();
        }
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            return futures::stream::once(async {
                refusal(
                    ErrorCode::RateLimited,
                    &format!(
                        "at most {MAX_SUBSCRIPTIONS_PER_SOCKET} subscriptions run on one socket; complete one first"
                    ),
                )
            })
            .boxed();
        };
        async_graphql::Executor::execute_stream(&self.schema, request, session_data)
            .map(move |response| {
                // The permit goes back when the subscription's stream is dropped.
                let _running = &permit;
                response
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_counted_per_address_and_freed_on_drop() {
        let sockets = Sockets::default();
        let held: Vec<SocketSlot> = (0..MAX_SOCKETS_PER_ADDRESS)
            .filter_map(|_| sockets.open("10.0.0.1"))
            .collect();
        assert_eq!(held.len(), MAX_SOCKETS_PER_ADDRESS);
        assert!(sockets.open("10.0.0.1").is_none());
        assert!(sockets.open("10.0.0.2").is_some(), "another address has its own");
        drop(held);
        assert!(sockets.open("10.0.0.1").is_some());
        assert!(
            sockets.0.lock().unwrap_or_else(PoisonError::into_inner).is_empty(),
            "nothing kept for addresses without sockets"
        );
    }
}
