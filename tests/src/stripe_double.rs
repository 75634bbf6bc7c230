//! A programmable stand-in for the Stripe API, for what localstripe cannot do: any subscription
//! status (`trialing`, `past_due`, `unpaid`, `paused`, `incomplete`, ...), the new item-level
//! billing periods and the old top-level ones, outages (refused connections, 5xx), rate limits
//! (429) and slow answers.
//!
//! [`StripeDouble`] owns an in-process HTTP/1.1 server (hyper, on a tokio task) on a free
//! loopback port that serves `GET /v1/subscriptions/{id}` and `GET /v1/subscriptions` from
//! subscriptions the test puts in, checks `Authorization: Bearer` against
//! [`StripeDouble::SECRET_KEY`], and logs every request. The module also builds what Stripe
//! sends to the product: subscription and invoice event objects ([`subscription_event`],
//! [`invoice_event`]) and `Stripe-Signature` header values ([`stripe_signature`] and variants).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// The API version the builders claim their objects have (the first with item-level periods).
pub const STRIPE_API_VERSION: &str = "2025-03-31.basil";

/// Every status a Stripe subscription can have.
const STATUSES: [&str; 8] = [
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
];

/// A fake Stripe API on `127.0.0.1`: the subscriptions the test put in, the faults it asked
/// for, and a log of every request received. Stops serving when dropped.
pub struct StripeDouble {
    addr: SocketAddr,
    shared: Arc<Mutex<State>>,
    running: Mutex<Option<Running>>,
}

/// The server task while it listens, and how to tell it to stop.
struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// What the server answers from; shared between the test and the server task.
#[derive(Default)]
struct State {
    /// Subscriptions in insertion order (a replaced one keeps its place): the list order.
    subscriptions: Vec<Value>,
    /// `METHOD /path?query` of every request received, faults and refusals included.
    requests: Vec<String>,
    fault: Option<Fault>,
    delay: Option<Duration>,
}

/// Answer `status` instead of serving; `remaining` requests long, or until cleared if `None`.
#[derive(Clone, Copy)]
struct Fault {
    status: StatusCode,
    remaining: Option<usize>,
}

impl StripeDouble {
    /// The secret key the double accepts (`Authorization: Bearer sk_test_double`).
    pub const SECRET_KEY: &'static str = "sk_test_double";

    /// Starts the server on a free loopback port, with no subscriptions.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the Stripe double");
        let addr = listener.local_addr().expect("the Stripe double's address");
        let shared = Arc::new(Mutex::new(State::default()));
        let running = Mutex::new(Some(spawn(listener, shared.clone())));
        Self { addr, shared, running }
    }

    /// `http://127.0.0.1:<port>`: what the product's `STRIPE_API_BASE` should be.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A subscription object as the current API (≥ 2025-03-31) returns it: one item whose
    /// `current_period_start`/`current_period_end` are the billing period (a 30-day period
    /// ending at `period_end`), and no period at the top level. Any `status` string is taken
    /// as is; see [`StripeDouble::legacy_shape`] for the old shape.
    #[must_use]
    pub fn subscription(id: &str, customer: &str, status: &str, period_end: DateTime<Utc>) -> Value {
        let end = period_end.timestamp();
        let start = end - 30 * 86_400;
        let suffix = id.strip_prefix("sub_").unwrap_or(id);
        let canceled = (status == "canceled").then_some(end);
        json!({
            "id": id,
            "object": "subscription",
            "application": null,
            "billing_cycle_anchor": start,
            "cancel_at": null,
            "cancel_at_period_end": false,
            "canceled_at": canceled,
            "collection_method": "charge_automatically",
            "created": start,
            "currency": "usd",
            "customer": customer,
            "default_payment_method": null,
            "ended_at": canceled,
            "items": {
                "object": "list",
                "data": [{
                    "id": format!("si_{suffix}"),
                    "object": "subscription_item",
                    "created": start,
                    "current_period_start": start,
                    "current_period_end": end,
                    "metadata": {},
                    "price": {
                        "id": "price_double",
                        "object": "price",
                        "active": true,
                        "currency": "usd",
                        "lookup_key": null,
                        "metadata": {},
                        "product": "prod_double",
                        "recurring": { "interval": "month", "interval_count": 1, "usage_type": "licensed" },
                        "type": "recurring",
                        "unit_amount": 1000
                    },
                    "quantity": 1,
                    "subscription": id
                }],
                "has_more": false,
                "total_count": 1,
                "url": format!("/v1/subscription_items?subscription={id}")
            },
            "latest_invoice": null,
            "livemode": false,
            "metadata": {},
            "pause_collection": null,
            "start_date": start,
            "status": status,
            "trial_end": null,
            "trial_start": null
        })
    }

    /// `subscription` in the shape of API versions before 2025-03-31: the first item's period
    /// moved to top-level `current_period_start`/`current_period_end`, and no item has one.
    #[must_use]
    pub fn legacy_shape(mut subscription: Value) -> Value {
        let mut period = None;
        if let Some(items) = subscription["items"]["data"].as_array_mut() {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                let start = item.remove("current_period_start");
                let end = item.remove("current_period_end");
                period = period.or(start.zip(end));
            }
        }
        if let (Some((start, end)), Some(object)) = (period, subscription.as_object_mut()) {
            object.insert("current_period_start".to_owned(), start);
            object.insert("current_period_end".to_owned(), end);
        }
        subscription
    }

    /// Inserts `subscription` (keyed by its `id`), or replaces the one with that id in place.
    pub fn put(&self, subscription: Value) {
        let id = subscription["id"]
            .as_str()
            .expect("a subscription has an id")
            .to_owned();
        let mut state = self.state();
        match state.subscriptions.iter_mut().find(|s| s["id"] == id.as_str()) {
            Some(existing) => *existing = subscription,
            None => state.subscriptions.push(subscription),
        }
    }

    /// Removes the subscription `id` (afterwards Stripe answers 404 for it); whether it was there.
    pub fn remove(&self, id: &str) -> bool {
        let mut state = self.state();
        let before = state.subscriptions.len();
        state.subscriptions.retain(|s| s["id"] != id);
        state.subscriptions.len() != before
    }

    /// Changes the subscription `id` in place, e.g. `set("sub_1", |s| s["status"] = "past_due".into())`.
    ///
    /// # Panics
    /// If there is no subscription `id`.
    pub fn set(&self, id: &str, change: impl FnOnce(&mut Value)) {
        let mut state = self.state();
        let subscription = state
            .subscriptions
            .iter_mut()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("the Stripe double has no subscription {id}"));
        change(subscription);
    }

    /// The subscription `id` as the double would serve it now.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<Value> {
        self.state().subscriptions.iter().find(|s| s["id"] == id).cloned()
    }

    /// With `Some(status)`, every request is answered `status` with a Stripe-style error body
    /// (429 also with `Retry-After: 1`) until `fail_with(None)`.
    pub fn fail_with(&self, status: Option<StatusCode>) {
        self.state().fault = status.map(|status| Fault {
            status,
            remaining: None,
        });
    }

    /// The next `count` requests are answered `status` (as with [`StripeDouble::fail_with`]);
    /// then it serves normally again.
    pub fn fail_next(&self, count: usize, status: StatusCode) {
        self.state().fault = (count > 0).then_some(Fault {
            status,
            remaining: Some(count),
        });
    }

    /// With `Some(delay)`, every answer waits `delay` first (for the product's timeouts).
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.state().delay = delay;
    }

    /// A real outage: closes the listening socket and every open connection, so connecting to
    /// the port is refused until [`StripeDouble::resume`]. Subscriptions and the log stay.
    pub async fn stop(&self) {
        let running = self.running.lock().expect("the Stripe double's task").take();
        if let Some(running) = running {
            let _ = running.shutdown.send(());
            let _ = running.task.await;
        }
    }

    /// Listens again on the same port after [`StripeDouble::stop`] (no-op when running).
    pub async fn resume(&self) {
        if self.running.lock().expect("the Stripe double's task").is_some() {
            return;
        }
        // The port was ours a moment ago; give the kernel a little while if it is slow to free it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "rebind the Stripe double on {}: {e}",
                        self.addr
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        *self.running.lock().expect("the Stripe double's task") = Some(spawn(listener, self.shared.clone()));
    }

    /// `METHOD /path?query` of every request received so far, in order (faulted ones included).
    #[must_use]
    pub fn requests(&self) -> Vec<String> {
        self.state().requests.clone()
    }

    /// How many requests were received so far.
    #[must_use]
    pub fn request_count(&self) -> usize {
        self.state().requests.len()
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock().expect("the Stripe double's state")
    }
}

impl Drop for StripeDouble {
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.lock()
            && let Some(running) = running.take()
        {
            running.task.abort();
        }
    }
}

/// Serves `listener` on a new task until told to shut down; then closes every connection.
fn spawn(listener: TcpListener, shared: Arc<Mutex<State>>) -> Running {
    let (shutdown, mut stop) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let shared = shared.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |request| answer(shared.clone(), request));
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        connections.shutdown().await;
    });
    Running { shutdown, task }
}

/// One request: logged, then a fault, an auth error or the API's answer.
async fn answer(shared: Arc<Mutex<State>>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.uri().path().to_owned(), ToString::to_string);
    let (fault, delay) = {
        let mut state = shared.lock().expect("the Stripe double's state");
        state.requests.push(format!("{} {target}", request.method()));
        let fault = state.fault;
        if let Some(Fault {
            remaining: Some(remaining),
            ..
        }) = &mut state.fault
        {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                state.fault = None;
            }
        }
        (fault, state.delay)
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(fault) = fault {
        return Ok(fault_response(fault.status));
    }
    let expected = format!("Bearer {}", StripeDouble::SECRET_KEY);
    match request.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes) {
        Some(given) if given == expected.as_bytes() => {}
        Some(_) => {
            return Ok(error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                None,
                None,
                "Invalid API Key provided.",
            ));
        }
        None => {
            return Ok(error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                None,
                None,
                "You did not provide an API key. Provide it in the Authorization header (Authorization: Bearer YOUR_SECRET_KEY).",
            ));
        }
    }
    let state = shared.lock().expect("the Stripe double's state");
    let path = request.uri().path();
    let id = path
        .strip_prefix("/v1/subscriptions/")
        .filter(|id| !id.is_empty() && !id.contains('/'));
    let response = match (request.method(), id) {
        (&Method::GET, None) if matches!(path, "/v1/subscriptions" | "/v1/subscriptions/") => {
            list(&state.subscriptions, &query(request.uri().query()))
        }
        (&Method::GET, Some(id)) => match state.subscriptions.iter().find(|s| s["id"] == id) {
            Some(subscription) => ok(subscription),
            None => no_such_subscription(StatusCode::NOT_FOUND, id),
        },
        _ => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            None,
            None,
            &format!("Unrecognized request URL ({}: {path}).", request.method()),
        ),
    };
    Ok(response)
}

/// The query string's parameters, decoded.
fn query(query: Option<&str>) -> Vec<(String, String)> {
    let Some(query) = query else { return Vec::new() };
    reqwest::Url::parse(&format!("http://stripe.invalid/?{query}"))
        .map(|url| url.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

/// `GET /v1/subscriptions`: `status` (default: all but canceled; `all`; `ended`; one status),
/// `customer`, `limit` (1..=100, default 10) and `starting_after`, in insertion order.
fn list(subscriptions: &[Value], params: &[(String, String)]) -> Response<Full<Bytes>> {
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let status = param("status");
    if let Some(status) = status
        && !(status == "all" || status == "ended" || STATUSES.contains(&status))
    {
        return invalid_param(
            "status",
            &format!("Invalid status: must be one of {}, all or ended", STATUSES.join(", ")),
        );
    }
    let limit = match param("limit").map(str::parse::<usize>) {
        None => 10,
        Some(Ok(limit @ 1..=100)) => limit,
        Some(_) => return invalid_param("limit", "Invalid integer: limit must be between 1 and 100"),
    };
    let start = match param("starting_after") {
        None => 0,
        Some(after) => match subscriptions.iter().position(|s| s["id"] == after) {
            Some(index) => index + 1,
            None => return no_such_subscription(StatusCode::BAD_REQUEST, after),
        },
    };
    let customer = param("customer");
    let matching: Vec<&Value> = subscriptions[start..]
        .iter()
        .filter(|s| {
            let status_of = s["status"].as_str().unwrap_or_default();
            let status_ok = match status {
                None => status_of != "canceled",
                Some("all") => true,
                Some("ended") => matches!(status_of, "canceled" | "incomplete_expired"),
                Some(wanted) => status_of == wanted,
            };
            status_ok && customer.is_none_or(|c| s["customer"] == c)
        })
        .collect();
    ok(&json!({
        "object": "list",
        "url": "/v1/subscriptions",
        "has_more": matching.len() > limit,
        "data": matching.into_iter().take(limit).collect::<Vec<_>>()
    }))
}

/// 200 with `body` as JSON.
fn ok(body: &Value) -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, body)
}

/// A Stripe error: `{"error": {"type", "code"?, "param"?, "message"}}`.
fn error(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
    message: &str,
) -> Response<Full<Bytes>> {
    let mut body = json!({ "error": { "type": kind, "message": message } });
    if let Some(code) = code {
        body["error"]["code"] = code.into();
    }
    if let Some(param) = param {
        body["error"]["param"] = param.into();
    }
    json_response(status, &body)
}

/// `resource_missing` for a subscription id (404 on retrieve, 400 as a list cursor).
fn no_such_subscription(status: StatusCode, id: &str) -> Response<Full<Bytes>> {
    error(
        status,
        "invalid_request_error",
        Some("resource_missing"),
        Some("id"),
        &format!("No such subscription: '{id}'"),
    )
}

/// 400 for a bad query parameter `param`.
fn invalid_param(param: &str, message: &str) -> Response<Full<Bytes>> {
    let code = if param == "limit" {
        "parameter_invalid_integer"
    } else {
        "parameter_invalid_string"
    };
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some(code),
        Some(param),
        message,
    )
}

/// What an injected fault answers: Stripe's body for that status.
fn fault_response(status: StatusCode) -> Response<Full<Bytes>> {
    if status == StatusCode::TOO_MANY_REQUESTS {
        let mut response = error(
            status,
            "invalid_request_error",
            Some("rate_limit"),
            None,
            "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
        );
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    error(
        status,
        "api_error",
        None,
        None,
        "The Stripe double was told to fail this request.",
    )
}

/// `body` as a JSON response with `status`.
fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `hex(HMAC-SHA256(secret, "<t>.<body>"))`: one Stripe signature.
#[must_use]
pub fn stripe_signature_hex(secret: &str, body: &[u8], t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The `Stripe-Signature` header value Stripe sends for `body` at unix time `t`: `t=<t>,v1=<hex>`.
#[must_use]
pub fn stripe_signature(secret: &str, body: &[u8], t: i64) -> String {
    stripe_signature_many(&[secret], body, t)
}

/// `t=<t>,v1=<a>,v1=<b>,...`: one v1 per secret, as Stripe sends while a webhook secret is rolled.
#[must_use]
pub fn stripe_signature_many(secrets: &[&str], body: &[u8], t: i64) -> String {
    let mut header = format!("t={t}");
    for secret in secrets {
        header.push_str(",v1=");
        header.push_str(&stripe_signature_hex(secret, body, t));
    }
    header
}

/// `t=<t>,v0=<hex>`: a correct HMAC under the obsolete `v0` scheme only, which the product must
/// reject (only `v1` counts). Append it to [`stripe_signature`]'s value for a header carrying
/// both, which must be accepted for its `v1`.
#[must_use]
pub fn stripe_signature_v0(secret: &str, body: &[u8], t: i64) -> String {
    format!("t={t},v0={}", stripe_signature_hex(secret, body, t))
}

/// A Stripe event (`customer.subscription.created`/`updated`/`deleted`, ...) carrying
/// `subscription` as `data.object`, created now.
#[must_use]
pub fn subscription_event(event_id: &str, event_type: &str, subscription: &Value) -> Value {
    event(event_id, event_type, subscription.clone())
}

/// A Stripe invoice event (`invoice.paid`, `invoice.payment_failed`, ...) for a subscription's
/// invoice: `data.object` names the subscription both the old way (`subscription`) and the new
/// way (`parent.subscription_details.subscription`). Paid unless the type says it failed.
#[must_use]
pub fn invoice_event(event_id: &str, event_type: &str, subscription_id: &str, customer: &str) -> Value {
    let paid = !event_type.ends_with("payment_failed");
    let id = format!("in_{}", event_id.strip_prefix("evt_").unwrap_or(event_id));
    let now = Utc::now().timestamp();
    let invoice = json!({
        "id": id,
        "object": "invoice",
        "amount_due": 1000,
        "amount_paid": if paid { 1000 } else { 0 },
        "amount_remaining": if paid { 0 } else { 1000 },
        "attempt_count": 1,
        "billing_reason": "subscription_cycle",
        "created": now,
        "currency": "usd",
        "customer": customer,
        "livemode": false,
        "metadata": {},
        "parent": {
            "type": "subscription_details",
            "quote_details": null,
            "subscription_details": { "metadata": {}, "subscription": subscription_id }
        },
        "period_start": now - 30 * 86_400,
        "period_end": now,
        "status": if paid { "paid" } else { "open" },
        "subscription": subscription_id
    });
    event(event_id, event_type, invoice)
}

/// An event envelope around `object`.
fn event(event_id: &str, event_type: &str, object: Value) -> Value {
    json!({
        "id": event_id,
        "object": "event",
        "api_version": STRIPE_API_VERSION,
        "created": Utc::now().timestamp(),
        "data": { "object": object },
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": event_type
    })
}
