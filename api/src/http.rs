//! The HTTP surface: `/graphql` (POST, by query text or trusted `documentId`; GET with
//! GraphiQL), `/graphql/ws` (subscriptions), `/healthz`, `/readyz`, `/metrics`,
//! `/webhooks/stripe` (`stripe_webhook`).
//! The body cap, the batch refusal, the GET-mutation refusal, the request id, the 10 s timeout
//! and error masking all happen here, before and after the schema runs.

use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use async_graphql::parser::types::OperationType;
use domain::Domain;
use tracing::Instrument as _;

use crate::graphql::context::{Caller, ClientIp, RequestId, Scope, SocketToken};
use crate::graphql::error::ErrorCode;
use crate::graphql::trusted::{DirectCall, Named, TrustedRequest};
use crate::graphql::{Schemas, mask_errors};
use crate::metrics::Metrics;

/// Largest request body accepted from anonymous callers and devices (checked while reading,
/// before parsing).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest request body accepted from an authenticated staff session or API token: the files
/// staff upload (a usage report or deactivation file of a device that was offline for weeks
/// carries thousands of ledger records). The caller is authenticated before the body grows past
/// [`MAX_BODY_BYTES`].
pub const MAX_STAFF_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Longest a GraphQL request may run.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The use cases.
    pub domain: Domain,
    /// The GraphQL schemas.
    pub schemas: Schemas,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// `STRIPE_WEBHOOK_SECRET`; unset = billing webhooks are refused (503).
    pub stripe_webhook_secret: Option<std::sync::Arc<secrecy::SecretString>>,
    /// `TRUSTED_PROXIES`: whose `X-Forwarded-For` names the client.
    pub trusted_proxies: std::sync::Arc<crate::proxies::TrustedProxies>,
    /// The open subscription sockets per client address.
    pub sockets: crate::ws::Sockets,
    /// The embedded job workers' health (`WORKERS=embedded`), for `/readyz`.
    pub workers: Option<worker::WorkerHealth>,
}

/// Registers the routes on an actix app, with the browser pages: `/console` and the embedded
/// assets under `/assets/<build>/` (`crate::pages`, `crate::assets`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/graphql", web::post().to(graphql_post))
        .route("/graphql", web::get().to(graphql_get))
        .route("/graphql/ws", web::get().to(graphql_ws))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .route("/webhooks/stripe", web::post().to(crate::stripe_webhook::receive))
        .route("/console", web::get().to(crate::pages::console))
        .route("/assets/{build}/{path:.*}", web::get().to(crate::assets::serve));
}

/// Gives each request an id (`X-Request-Id`, echoed back) and counts it in the metrics.
///
/// # Errors
/// Whatever the inner service returns.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = uuid::Uuid::now_v7().to_string();
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let metrics = req.app_data::<web::Data<AppState>>().map(|s| s.metrics.clone());
    let started = Instant::now();
    let mut res = next.call(req).await?;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(header::HeaderName::from_static("x-request-id"), value);
    }
    if let Some(metrics) = metrics {
        metrics
            .http_requests
            .with_label_values(&[route.as_str(), res.status().as_str()])
            .inc();
        metrics
            .http_latency
            .with_label_values(&[route.as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(res)
}

fn request_id(req: &HttpRequest) -> String {
    req.extensions()
        .get::<RequestId>()
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), |r| r.0.clone())
}

fn error_body(status: actix_web::http::StatusCode, code: ErrorCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code.as_str() } }]
    }))
}

/// Who sent a request, from its `Authorization` header value (`Bearer <token>`). A failure to
/// check the credentials (the database down) is [`Caller::Unavailable`], never a refusal.
async fn caller(state: &AppState, authorization: Option<&str>, request_id: &str) -> Caller {
    let Some(value) = authorization else {
        return Caller::Anonymous;
    };
    let Some(bearer) = value.strip_prefix("Bearer ").map(str::trim) else {
        return Caller::Invalid("use Authorization: Bearer <token>".into());
    };
    match crate::auth::authenticate(&state.domain, bearer, Some(request_id.to_owned())).await {
        Ok(actor) => Caller::Authenticated(Scope::new(&state.domain, actor)),
        Err(domain::Error::Unauthenticated(message)) => Caller::Invalid(message),
        Err(err) => {
            tracing::error!(request_id, error = %err, "authentication failed");
            Caller::Unavailable
        }
    }
}

fn authorization_header(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default())
}

/// The socket's peer; when that peer is a trusted proxy (`TRUSTED_PROXIES`), the right-most
/// `X-Forwarded-For` entry that is not itself one. Without trusted proxies a client-supplied
/// header is never read (it would let a client pick a fresh address for every login attempt).
/// An IPv6 client is its /64 network: one host usually holds a whole /64, and per-address
/// limits must not give it 2^64 budgets.
fn client_ip(state: &AppState, req: &HttpRequest) -> ClientIp {
    let Some(peer) = req.peer_addr().map(|addr| addr.ip()) else {
        return ClientIp("unknown".to_owned());
    };
    let forwarded_for = req
        .headers()
        .get_all(header::HeaderName::from_static("x-forwarded-for"))
        .filter_map(|value| value.to_str().ok());
    ClientIp(match state.trusted_proxies.client(peer, forwarded_for) {
        std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(network))
        }
        ip => ip.to_canonical().to_string(),
    })
}

/// Runs one operation for `caller` (authenticated here when the body reader did not have to).
async fn execute(
    state: &AppState,
    req: &HttpRequest,
    mut request: async_graphql::Request,
    caller: Option<Caller>,
) -> HttpResponse {
    let request_id = request_id(req);
    let span = tracing::info_span!("graphql", request_id = %request_id);
    async {
        // Refused before anything runs (or authenticates): a document holding more than one
        // of the expensive anonymous fields.
        let prepared = match state.schemas.prepare(&mut request) {
            Ok(prepared) => prepared,
            Err(refused) => return respond(state, &request_id, async_graphql::Response::from_errors(vec![refused])),
        };
        let caller = match caller {
            Some(caller) => caller,
            None => self::caller(state, authorization_header(req), &request_id).await,
        };
        let request = request
            .data(caller)
            .data(client_ip(state, req))
            .data(RequestId(request_id.clone()));
        let response = match tokio::time::timeout(REQUEST_TIMEOUT, prepared.schema.execute(request)).await {
            Ok(response) => {
                state.schemas.remember(prepared.to_remember, &response);
                response
            }
            Err(_) => timed_out(),
        };
        respond(state, &request_id, response)
    }
    .instrument(span)
    .await
}

/// Answers a trusted document by its direct path (`None`: it has none for this request, and
/// the executor answers it), under the same timeout and request span as the executor.
async fn answer_directly(
    state: &AppState,
    req: &HttpRequest,
    trusted: &TrustedRequest<'_>,
    body: &serde_json::Value,
    caller: Option<&Caller>,
) -> Option<HttpResponse> {
    let request_id = request_id(req);
    let span = tracing::info_span!("graphql", request_id = %request_id);
    async {
        let ip = client_ip(state, req);
        let call = DirectCall {
            domain: &state.domain,
            limiters: &state.schemas.device_limiters,
            client_ip: &ip.0,
            request_id: &request_id,
        };
        let authenticate = async || match caller {
            Some(caller) => caller.clone(),
            None => self::caller(state, authorization_header(req), &request_id).await,
        };
        let response =
            match tokio::time::timeout(REQUEST_TIMEOUT, trusted.answer_directly(body, call, authenticate)).await {
                Ok(answer) => answer?,
                Err(_) => timed_out(),
            };
        state.metrics.trusted_documents.with_label_values(&["direct"]).inc();
        Some(respond(state, &request_id, response))
    }
    .instrument(span)
    .await
}

fn timed_out() -> async_graphql::Response {
    tracing::warn!("request timed out");
    async_graphql::Response::from_errors(vec![ErrorCode::Internal.server_error("the request took too long")])
}

/// The HTTP answer to a GraphQL response, with every error masked (allow-listed codes only)
/// and counted, and `Retry-After` from a rate-limited error.
fn respond(state: &AppState, request_id: &str, mut response: async_graphql::Response) -> HttpResponse {
    mask_errors(&mut response.errors, request_id);
    for err in &response.errors {
        if let Some(async_graphql::Value::String(code)) = err.extensions.as_ref().and_then(|e| e.get("code")) {
            state.metrics.graphql_errors.with_label_values(&[code.as_str()]).inc();
        }
    }
    let retry_after =
        response
            .errors
            .iter()
            .find_map(|e| match e.extensions.as_ref().and_then(|x| x.get("retryAfter")) {
                Some(async_graphql::Value::Number(n)) => n.as_u64(),
                _ => None,
            });
    let mut http = HttpResponse::Ok();
    if let Some(seconds) = retry_after {
        http.insert_header((header::RETRY_AFTER, seconds.to_string()));
    }
    http.json(response)
}

/// Reads the body up to [`MAX_BODY_BYTES`], or up to [`MAX_STAFF_BODY_BYTES`] for a caller who
/// authenticates as staff or an API token (authenticated once the body passes the first cap,
/// and handed on so the operation does not authenticate again). Too large: 413.
async fn read_body(
    state: &AppState,
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<(web::Bytes, Option<Caller>), HttpResponse> {
    use futures::StreamExt as _;
    let too_large = |limit: usize| {
        error_body(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::InvalidInput,
            &format!("the body is larger than {limit} bytes"),
        )
    };
    let (mut body, mut limit, mut caller) = (web::BytesMut::new(), MAX_BODY_BYTES, None);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            error_body(
                actix_web::http::StatusCode::BAD_REQUEST,
                ErrorCode::InvalidInput,
                "the body could not be read",
            )
        })?;
        if body.len() + chunk.len() > limit && caller.is_none() {
            let who = self::caller(state, authorization_header(req), &request_id(req)).await;
            if let Caller::Authenticated(scope) = &who
                && matches!(
                    scope.actor.kind,
                    domain::ActorKind::Staff { .. } | domain::ActorKind::Token { .. }
                )
            {
                limit = MAX_STAFF_BODY_BYTES;
            }
            caller = Some(who);
        }
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body.freeze(), caller))
}

async fn graphql_post(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let (body, caller) = match read_body(&state, &req, payload).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(_) => {
            return error_body(
                actix_web::http::StatusCode::BAD_REQUEST,
                ErrorCode::InvalidInput,
                "the body is not valid JSON",
            );
        }
    };
    if value.is_array() {
        return error_body(
            actix_web::http::StatusCode::BAD_REQUEST,
            ErrorCode::InvalidInput,
            "batched operations are not accepted; send one operation per request",
        );
    }
    let trusted = match state.schemas.trusted.named(&value) {
        Ok(Named::Trusted(trusted)) => Some(trusted),
        Ok(Named::Text) => None,
        Err(refused) => {
            return respond(
                &state,
                &request_id(&req),
                async_graphql::Response::from_errors(vec![refused]),
            );
        }
    };
    if let Some(trusted) = &trusted
        && let Some(answered) = answer_directly(&state, &req, trusted, &value, caller.as_ref()).await
    {
        return answered;
    }
    let mut request: async_graphql::Request = match serde_json::from_value(value) {
        Ok(request) => request,
        Err(_) => {
            return error_body(
                actix_web::http::StatusCode::BAD_REQUEST,
                ErrorCode::InvalidInput,
                "the body must be {\"query\", \"variables\", \"operationName\"} or {\"documentId\", \"variables\", \"operationName\"}",
            );
        }
    };
    if let Some(trusted) = trusted {
        state.metrics.trusted_documents.with_label_values(&["executor"]).inc();
        trusted.text().clone_into(&mut request.query);
    }
    execute(&state, &req, request, caller).await
}

#[derive(serde::Deserialize)]
struct GetParams {
    query: Option<String>,
    variables: Option<String>,
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
}

/// GraphiQL without a `query` parameter; otherwise the query runs, but never a mutation.
async fn graphql_get(state: web::Data<AppState>, req: HttpRequest, params: web::Query<GetParams>) -> HttpResponse {
    let GetParams {
        query,
        variables,
        operation_name,
    } = params.into_inner();
    let Some(query) = query else {
        return crate::pages::graphiql();
    };
    let variables = match variables
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
        .transpose()
    {
        Ok(v) => v.map(async_graphql::Variables::from_json).unwrap_or_default(),
        Err(_) => {
            return error_body(
                actix_web::http::StatusCode::BAD_REQUEST,
                ErrorCode::InvalidInput,
                "variables is not JSON",
            );
        }
    };
    let mut request = async_graphql::Request::new(query).variables(variables);
    if let Some(name) = &operation_name {
        request = request.operation_name(name);
    }
    let Ok(document) = request.parsed_query() else {
        return error_body(
            actix_web::http::StatusCode::BAD_REQUEST,
            ErrorCode::InvalidInput,
            "the query does not parse",
        );
    };
    let is_mutation = document.operations.iter().any(|(name, op)| {
        op.node.ty != OperationType::Query
            && (operation_name.is_none() || name.map(|n| n.as_str()) == operation_name.as_deref())
    });
    if is_mutation {
        return error_body(
            actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::InvalidInput,
            "only queries may be sent with GET; send mutations with POST",
        );
    }
    execute(&state, &req, request, None).await
}

/// Subscriptions over websocket (`graphql-transport-ws`; limits in [`crate::ws`]). The caller
/// is the `Authorization` of the `connection_init` payload (`{"Authorization": "Bearer
/// <token>"}`), else the upgrade request's header; no token, or one that does not authenticate,
/// closes the connection. Past the open sockets allowed per address: 429 `RATE_LIMITED`.
async fn graphql_ws(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> actix_web::Result<HttpResponse> {
    let request_id = request_id(&req);
    let header = authorization_header(&req).map(str::to_owned);
    let ip = client_ip(&state, &req);
    let Some(slot) = state.sockets.open(&ip.0) else {
        return Ok(error_body(
            actix_web::http::StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            &format!(
                "at most {} websockets per client address; close one first",
                crate::ws::MAX_SOCKETS_PER_ADDRESS
            ),
        ));
    };
    let schema = state.schemas.main.clone();
    let state = state.into_inner();
    let on_init = move |init: serde_json::Value| async move {
        let authorization = ["Authorization", "authorization"]
            .iter()
            .find_map(|k| init.get(*k).and_then(serde_json::Value::as_str).map(str::to_owned))
            .or(header);
        let caller = caller(&state, authorization.as_deref(), &request_id).await;
        match &caller {
            Caller::Authenticated(_) => {}
            Caller::Anonymous => {
                return Err(async_graphql::Error::new(
                    "send {\"Authorization\": \"Bearer <token>\"} in the connection_init payload",
                ));
            }
            Caller::Invalid(message) => return Err(async_graphql::Error::new(message.clone())),
            Caller::Unavailable => return Err(async_graphql::Error::new(crate::graphql::context::UNAVAILABLE)),
        }
        let token = authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(|t| SocketToken(t.trim().to_owned()));
        let mut data = async_graphql::Data::default();
        data.insert(caller);
        data.insert(ip);
        data.insert(RequestId(request_id));
        if let Some(token) = token {
            data.insert(token);
        }
        Ok(data)
    };
    crate::ws::start(&req, payload, schema, slot, on_init)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Ready when the database is reachable and migrated and, with embedded workers, the workers
/// run (503 with the reason otherwise: the API itself goes on answering).
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match domain::db::is_ready(&state.domain.db).await {
        Ok(true) => match state.workers.as_ref().map(worker::WorkerHealth::get) {
            None | Some(worker::Health::Running) => HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })),
            Some(worker::Health::Starting) => {
                HttpResponse::ServiceUnavailable().json(serde_json::json!({ "status": "job workers starting" }))
            }
            // The cause is in the log, not here.
            Some(worker::Health::Down(_)) => HttpResponse::ServiceUnavailable().json(serde_json::json!({
                "status": "job workers unavailable: their queue (Redis with REDIS_URL) is unreachable; retrying"
            })),
        },
        Ok(false) => HttpResponse::ServiceUnavailable().json(serde_json::json!({ "status": "migrations pending" })),
        Err(err) => {
            tracing::warn!(error = %err, "readiness check failed");
            HttpResponse::ServiceUnavailable().json(serde_json::json!({ "status": "database unreachable" }))
        }
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
