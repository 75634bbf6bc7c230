//! Attacks by a caller with no account, each a real request against the real binary, with
//! "nothing changed" checked after it: the login flood, the per-address login budget, trusted
//! proxies, the websocket frame flood and silent sockets, socket and subscription caps, bad
//! keys next to a good one, and the per-key and per-device budgets.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tests::{
    Backend, TestServer, activate, components, error_code, eventually, license_with_policy, on_both_databases, seed,
};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const LOGIN: &str = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }";
const VALIDATE: &str = "mutation($in: ValidateLicenseInput!) { validateLicense(input: $in) { valid code } }";
const HEARTBEAT: &str = "mutation { heartbeat { licenseVersion } }";

/// A login from this test's address, optionally claiming another in X-Forwarded-For.
async fn login(server: &TestServer, email: &str, forwarded_for: Option<&str>) -> Value {
    let mut req = server
        .http()
        .post(format!("{}/graphql", server.base_url))
        .json(&json!({ "query": LOGIN, "variables": { "e": email, "p": "wrong password!" } }));
    if let Some(ip) = forwarded_for {
        req = req.header("x-forwarded-for", ip);
    }
    req.send().await.unwrap().json().await.unwrap()
}

async fn timed<T>(work: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = work.await;
    (out, started.elapsed())
}

/// 500 aliased logins in one document are refused at once with nothing executed; four such
/// documents and a burst of single logins at the same time leave other callers answered
/// within a second.
async fn login_flood(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner_token.clone();
    let s = seed(&server, &owner).await;
    let before = server.audit_count(&server.owner_token).await;
    let flood = format!(
        "mutation {{ {} }}",
        (0..500)
            .map(|i| format!("l{i}: login(email: \"u{i}@flood.test\", password: \"password {i}\") {{ token }} "))
            .collect::<String>()
    );
    let (res, took) = timed(server.gql(None, &flood, json!({}))).await;
    assert!(took < Duration::from_secs(1), "refused in {took:?}");
    assert_eq!(error_code(&res), Some("INVALID_INPUT"), "{res}");
    assert!(res["data"].is_null(), "{res}");
    // Through fragments and mixed with other expensive fields: refused the same way.
    let mixed = format!(
        "mutation {{ ...F validateLicense(input: {{licenseKey: \"{}\"}}) {{ valid }} }} fragment F on Mutation {{ login(email: \"a@b.test\", password: \"x\") {{ token }} }}",
        s.key
    );
    assert_eq!(
        error_code(&server.gql(None, &mixed, json!({})).await),
        Some("INVALID_INPUT")
    );

    let floods = (0..4).map(|_| server.gql(None, &flood, json!({})));
    let singles = (0..30).map(|i| {
        let server = &server;
        async move { login(server, &format!("single{i}@flood.test"), None).await }
    });
    let probes = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut slowest = Duration::ZERO;
        for _ in 0..3 {
            let (v, took) = timed(server.gql(None, VALIDATE, json!({ "in": { "licenseKey": s.key } }))).await;
            assert_eq!(v["data"]["validateLicense"]["code"], "VALID", "{v}");
            slowest = slowest.max(took);
            let (staff, took) = timed(server.gql(Some(&owner), "{ viewer { role } }", json!({}))).await;
            assert_eq!(staff["data"]["viewer"]["role"], "OWNER", "{staff}");
            slowest = slowest.max(took);
        }
        slowest
    };
    let (floods, singles, slowest) = tokio::join!(join_all(floods), join_all(singles), probes);
    assert!(slowest < Duration::from_secs(1), "other callers waited {slowest:?}");
    for res in &floods {
        assert_eq!(error_code(res), Some("INVALID_INPUT"), "{res}");
    }
    for res in &singles {
        let code = error_code(res);
        assert!(matches!(code, Some("UNAUTHENTICATED" | "RATE_LIMITED")), "{res}");
    }
    assert_eq!(
        server.audit_count(&server.owner_token).await,
        before,
        "no session opened, nothing written"
    );
}
on_both_databases!(login_flood_is_refused_and_others_are_served, login_flood);

/// Logins spread over many addresses (behind a trusted proxy, so no per-address budget stops
/// them) are limited by the password-hashing permits: the ones that find every permit taken
/// are RATE_LIMITED at once instead of queueing on the request threads, and other callers are
/// answered within a second throughout.
async fn hashing_permits(backend: Backend) {
    let server = TestServer::start_with(backend, &[("TRUSTED_PROXIES", "127.0.0.1")]).await;
    let owner = server.owner_token.clone();
    let s = seed(&server, &owner).await;
    let before = server.audit_count(&owner).await;
    let logins = (0..120).map(|i| {
        let server = &server;
        async move {
            let address = format!("10.9.{}.{}", i / 200, i % 200 + 1);
            timed(login(server, &format!("spread{i}@flood.test"), Some(&address))).await
        }
    });
    let probes = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut slowest = Duration::ZERO;
        for _ in 0..5 {
            let (v, took) = timed(server.gql(None, VALIDATE, json!({ "in": { "licenseKey": s.key } }))).await;
            assert_eq!(v["data"]["validateLicense"]["code"], "VALID", "{v}");
            slowest = slowest.max(took);
        }
        slowest
    };
    let (logins, slowest) = tokio::join!(join_all(logins), probes);
    assert!(slowest < Duration::from_secs(1), "other callers waited {slowest:?}");
    let busy = logins
        .iter()
        .filter(|(res, _)| error_code(res) == Some("RATE_LIMITED"))
        .count();
    for (res, _) in &logins {
        assert!(
            matches!(error_code(res), Some("UNAUTHENTICATED" | "RATE_LIMITED")),
            "{res}"
        );
    }
    assert!(busy > 0, "120 concurrent logins never found the hashing permits taken");
    assert_eq!(server.audit_count(&owner).await, before, "no session opened");
}
on_both_databases!(password_hashing_is_bounded_and_refuses_when_busy, hashing_permits);

/// Twenty logins a minute per address whatever the emails; a malformed or oversized email is
/// refused before it reaches any limiter; X-Forwarded-For is ignored by default.
async fn login_budget(backend: Backend) {
    let server = TestServer::start(backend).await;
    let before = server.audit_count(&server.owner_token).await;
    for bad in ["not-an-email".to_owned(), format!("{}@x.test", "a".repeat(10_000))] {
        for _ in 0..15 {
            assert_eq!(error_code(&login(&server, &bad, None).await), Some("INVALID_INPUT"));
        }
    }
    for i in 0..20 {
        let res = login(&server, &format!("guess{i}@vendor.test"), None).await;
        assert_eq!(error_code(&res), Some("UNAUTHENTICATED"), "attempt {i}: {res}");
    }
    let res = login(&server, "guess20@vendor.test", None).await;
    assert_eq!(error_code(&res), Some("RATE_LIMITED"), "{res}");
    assert!(res["errors"][0]["extensions"]["retryAfter"].as_u64().is_some(), "{res}");
    let res = login(&server, "guess21@vendor.test", Some("203.0.113.50")).await;
    assert_eq!(
        error_code(&res),
        Some("RATE_LIMITED"),
        "a claimed address is not believed: {res}"
    );
    assert_eq!(server.audit_count(&server.owner_token).await, before);
}
on_both_databases!(login_budget_per_address, login_budget);

/// Behind a trusted proxy the client is the right-most X-Forwarded-For entry that is not a
/// trusted proxy itself: each client has its own budget, and a client cannot escape its own
/// by prepending addresses.
async fn forwarded_for(backend: Backend) {
    let server = TestServer::start_with(backend, &[("TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8")]).await;
    for i in 0..30 {
        let res = login(&server, "shared@vendor.test", Some(&format!("198.51.100.{i}"))).await;
        assert_eq!(
            error_code(&res),
            Some("UNAUTHENTICATED"),
            "client {i} has its own budget: {res}"
        );
    }
    for i in 0..5 {
        let claimed = format!("192.0.2.{i}, 203.0.113.7, 10.1.1.1");
        let res = login(&server, "ann@vendor.test", Some(&claimed)).await;
        assert_eq!(error_code(&res), Some("UNAUTHENTICATED"), "{res}");
    }
    let res = login(&server, "ann@vendor.test", Some("203.0.113.7")).await;
    assert_eq!(
        error_code(&res),
        Some("RATE_LIMITED"),
        "203.0.113.7 was the client each time: {res}"
    );
}
on_both_databases!(trusted_proxies_name_the_client, forwarded_for);

/// A websocket to `/graphql/ws`, upgraded with the graphql-transport-ws protocol.
async fn socket(
    server: &TestServer,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::Error,
> {
    let url = format!("{}/graphql/ws", server.base_url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

fn rss_kib(server: &TestServer) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The close code the server ends `socket` with (None: the connection just ended).
async fn close_code<S>(socket: &mut S, within: Duration) -> Option<u16>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return None,
            Err(_) => panic!("the server did not close the socket within {within:?}"),
        }
    }
}

/// An anonymous socket streaming unfinished continuation frames before `connection_init` is
/// closed long before 32 MiB, and the server's memory does not grow with what was sent; one
/// frame over 64 KiB is refused too.
async fn frame_flood(backend: Backend) {
    let server = TestServer::start(backend).await;
    let rss_before = rss_kib(&server);
    let (mut writer, mut reader) = socket(&server).await.unwrap().split();
    let closed = tokio::spawn(async move { close_code(&mut reader, Duration::from_secs(60)).await });
    let chunk = vec![b'x'; 16 * 1024];
    let (mut sent, mut rss_peak) = (0usize, rss_before);
    let mut first = true;
    while sent < 32 << 20 {
        let opcode = OpCode::Data(if first { Data::Text } else { Data::Continue });
        first = false;
        if writer
            .send(Message::Frame(Frame::message(chunk.clone(), opcode, false)))
            .await
            .is_err()
        {
            break;
        }
        sent += chunk.len();
        if sent % (1 << 20) == 0 {
            rss_peak = rss_peak.max(rss_kib(&server));
        }
    }
    rss_peak = rss_peak.max(rss_kib(&server));
    assert!(sent < 32 << 20, "the server kept reading: {sent} bytes accepted");
    let growth = rss_peak.saturating_sub(rss_before);
    assert!(growth < 16 * 1024, "RSS grew {growth} KiB for {sent} bytes sent");
    let code = tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(code, Some(1009) | None), "{code:?}");

    // One text frame of 70 KiB: closed with 1009 (message too big).
    let mut big = socket(&server).await.unwrap();
    let _ = big.send(Message::text("x".repeat(70 * 1024))).await;
    assert_eq!(close_code(&mut big, Duration::from_secs(10)).await, Some(1009));

    // Nothing changed: the server serves as before.
    let viewer = server.ok(&server.owner_token, "{ viewer { role } }", json!({})).await;
    assert_eq!(viewer["viewer"]["role"], "OWNER");
}
on_both_databases!(websocket_frame_flood_is_cut_off, frame_flood);

/// A socket that never sends `connection_init` is closed with 4408 after 10 s.
async fn silent_socket(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut silent = socket(&server).await.unwrap();
    let started = Instant::now();
    let code = close_code(&mut silent, Duration::from_secs(14)).await;
    assert_eq!(code, Some(4408));
    assert!(started.elapsed() >= Duration::from_secs(9), "{:?}", started.elapsed());
}
on_both_databases!(silent_socket_is_closed_4408, silent_socket);

/// At most 8 subscriptions per socket and 16 sockets per address; a closed socket frees its
/// place.
async fn socket_caps(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut dashboard = socket(&server).await.unwrap();
    let init =
        json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {}", server.owner_token) } });
    dashboard.send(Message::text(init.to_string())).await.unwrap();
    let next_json = |frame: Option<Result<Message, _>>| match frame {
        Some(Ok(Message::Text(text))) => serde_json::from_str::<Value>(&text).unwrap(),
        other => panic!("{other:?}"),
    };
    let ack = next_json(dashboard.next().await);
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    for id in 1..=9 {
        let subscribe = json!({ "id": id.to_string(), "type": "subscribe", "payload": { "query": "subscription { alerts { kind } }" } });
        dashboard.send(Message::text(subscribe.to_string())).await.unwrap();
    }
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let message = next_json(dashboard.next().await);
            if message["type"] != "ping" && message["type"] != "pong" {
                break message;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(refused["id"], "9", "{refused}");
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "RATE_LIMITED",
        "{refused}"
    );
    drop(dashboard);

    // The dashboard's place comes back once the server has seen it close.
    let mut open = Vec::new();
    while open.len() < 16 {
        match socket(&server).await {
            Ok(s) => open.push(s),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    match socket(&server).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("the 17th socket was not refused: {:?}", other.map(|_| ())),
    }
    drop(open.pop());
    eventually(Duration::from_secs(5), "a closed socket to free its place", || async {
        socket(&server).await.ok().map(|_| ())
    })
    .await;
}
on_both_databases!(sockets_and_subscriptions_are_capped, socket_caps);

/// Guessed keys from one address are refused past the limit, while a good key from the same
/// address still validates, activates and heartbeats.
async fn bad_keys(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner_token.clone();
    let (_, license, key) = license_with_policy(&server, &owner, "maxActivations: 3").await;
    let device = activate(&server, &key, "good-1", components("good-1")).await;
    let device_token = device["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut limited = false;
    for i in 0..100 {
        let guess = json!({ "in": { "licenseKey": format!("AAAAA-AAAAA-AAAAA-AAAAA-{i:05}") } });
        let res = server.gql(None, VALIDATE, guess).await;
        if error_code(&res) == Some("RATE_LIMITED") {
            assert!(i >= 60, "refused after {i} guesses");
            limited = true;
            break;
        }
        assert_eq!(res["data"]["validateLicense"]["code"], "NOT_FOUND", "{res}");
    }
    assert!(limited, "guessing is limited");
    let v = server.gql(None, VALIDATE, json!({ "in": { "licenseKey": key } })).await;
    assert_eq!(v["data"]["validateLicense"]["code"], "VALID", "{v}");
    let second = activate(&server, &key, "good-2", components("good-2")).await;
    assert!(second.get("errors").is_none(), "{second}");
    server.ok(&device_token, HEARTBEAT, json!({})).await;
    let seats = server
        .ok(
            &owner,
            "query($id: ID) { license(id: $id) { activeDevices } }",
            json!({ "id": license }),
        )
        .await;
    assert_eq!(seats["license"]["activeDevices"], 2, "exactly the two good devices");
}
on_both_databases!(bad_keys_do_not_lock_out_a_good_key, bad_keys);

/// A license key has a budget of validations, a device of heartbeats: past it RATE_LIMITED
/// with retryAfter (and Retry-After), other keys unaffected.
/// Validates `key` (with `fingerprint`, if any) `width` at a time until one answer is
/// RATE_LIMITED; returns how many were answered VALID or NOT_ACTIVATED before, the refusal and
/// its `Retry-After` header.
async fn validate_until_refused(
    server: &TestServer,
    key: &str,
    fingerprint: Option<&str>,
    width: usize,
    most: usize,
) -> (usize, Value, Option<reqwest::header::HeaderValue>) {
    let url = format!("{}/graphql", server.base_url);
    let mut answered = 0;
    while answered <= most {
        let calls = (0..width).map(|_| {
            server
                .http()
                .post(&url)
                .json(&json!({ "query": VALIDATE, "variables": { "in": { "licenseKey": key, "fingerprint": fingerprint } } }))
                .send()
        });
        // The calls of a batch run concurrently, so every answer of the batch is counted.
        let mut refused = None;
        for res in join_all(calls).await {
            let res = res.unwrap();
            let retry_after = res.headers().get("retry-after").cloned();
            let body: Value = res.json().await.unwrap();
            if error_code(&body) == Some("RATE_LIMITED") {
                refused.get_or_insert((body, retry_after));
                continue;
            }
            let code = body["data"]["validateLicense"]["code"].as_str();
            assert!(matches!(code, Some("VALID" | "NOT_ACTIVATED")), "{body}");
            answered += 1;
        }
        if let Some((body, retry_after)) = refused {
            return (answered, body, retry_after);
        }
    }
    panic!("{answered} validations of one key were never limited");
}

async fn per_key_budget(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner_token.clone();
    let (_, _, key) = license_with_policy(&server, &owner, "maxActivations: 3").await;
    let (_, _, other_key) = license_with_policy(&server, &owner, "maxActivations: 3").await;

    // One machine (key and fingerprint) has a budget of its own: it cannot use up its site's.
    let (answered, body, _) = validate_until_refused(&server, &key, Some("one-machine"), 8, 200).await;
    assert!(answered >= 60, "refused after {answered}");
    assert!(
        body["errors"][0]["extensions"]["retryAfter"].as_u64().is_some(),
        "{body}"
    );
    let sibling = server
        .gql(
            None,
            VALIDATE,
            json!({ "in": { "licenseKey": key, "fingerprint": "another-machine" } }),
        )
        .await;
    assert_eq!(sibling["data"]["validateLicense"]["code"], "NOT_ACTIVATED", "{sibling}");

    // The license alone (no fingerprint): 600 a minute, then RATE_LIMITED with retryAfter and
    // Retry-After. (All of a key's devices together have 6000 a minute.)
    let (answered, body, retry_after) = validate_until_refused(&server, &key, None, 16, 3200).await;
    assert!(answered >= 600, "refused after {answered}");
    assert!(
        body["errors"][0]["extensions"]["retryAfter"].as_u64().is_some(),
        "{body}"
    );
    assert!(retry_after.is_some(), "Retry-After header");
    let other = server
        .gql(None, VALIDATE, json!({ "in": { "licenseKey": other_key } }))
        .await;
    assert_eq!(
        other["data"]["validateLicense"]["code"], "VALID",
        "another key is not limited"
    );

    let device = activate(&server, &other_key, "beats", components("beats")).await;
    let token = device["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut beats = 0;
    let res = loop {
        let res = server.gql(Some(&token), HEARTBEAT, json!({})).await;
        if res.get("errors").is_some() {
            break res;
        }
        beats += 1;
        assert!(beats <= 200, "heartbeats are limited");
    };
    assert_eq!(error_code(&res), Some("RATE_LIMITED"), "{res}");
    assert!(beats >= 60, "refused after {beats}");
    assert!(res["errors"][0]["extensions"]["retryAfter"].as_u64().is_some(), "{res}");
}
on_both_databases!(per_key_and_per_device_budgets, per_key_budget);
