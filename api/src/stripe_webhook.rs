//! `POST /webhooks/stripe`: Stripe's events, verified and stored, never trusted for state.
//!
//! The `Stripe-Signature` header is `t=<unix>,v1=<hex>[,v1=<hex>...]`: HMAC-SHA256 of the exact
//! bytes `"<t>.<raw body>"` under `STRIPE_WEBHOOK_SECRET`. The event is accepted when any `v1`
//! matches (compared in constant time; `v0` and unknown schemes are ignored) and `t` is within
//! 300 s of now. Missing, forged, stale or malformed: 400 and nothing is stored. A verified
//! event is stored in the inbox ([`domain::billing`]) before the 200, so the worker re-reads
//! its subscription; a redelivered event id answers 200 and does nothing; a storage failure
//! answers 500 so Stripe retries. Unset `STRIPE_WEBHOOK_SECRET`: 503 (billing sync is off;
//! Stripe keeps retrying until it is configured).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use domain::billing::{EventReceipt, StripeEvent};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;

use crate::http::AppState;

/// Largest event body read (Stripe's are a few KiB; a subscription with many items stays far
/// below this). Read before verifying, so it bounds what an anonymous caller can send.
pub const MAX_WEBHOOK_BYTES: usize = 256 * 1024;
/// How far `t` may be from now.
pub const TOLERANCE_SECONDS: i64 = 300;
/// The most `v1` signatures looked at (Stripe sends one per active secret: two while rolling).
const MAX_SIGNATURES: usize = 8;

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// No `t` or no `v1`, or not the `key=value` list.
    Malformed,
    /// `t` is more than [`TOLERANCE_SECONDS`] from now.
    Stale,
    /// No `v1` matches.
    Forged,
}

impl SignatureError {
    fn message(self) -> &'static str {
        match self {
            Self::Malformed => "the Stripe-Signature header is malformed",
            Self::Stale => "the Stripe-Signature timestamp is more than 300 s from now",
            Self::Forged => "no Stripe-Signature v1 signature matches",
        }
    }
}

/// Checks a `Stripe-Signature` header against the raw body, at Unix time `now`.
///
/// # Errors
/// [`SignatureError`] saying why it was refused.
pub fn verify_signature(secret: &[u8], header: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part.trim().split_once('=').ok_or(SignatureError::Malformed)?;
        match key {
            "t" if timestamp.is_none() => {
                timestamp = Some(value.parse::<i64>().map_err(|_| SignatureError::Malformed)?);
            }
            "t" => return Err(SignatureError::Malformed),
            // A v1 that is not hex cannot match; it does not spoil the others.
            "v1" if signatures.len() < MAX_SIGNATURES => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.abs_diff(t) > TOLERANCE_SECONDS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).map_err(|_| SignatureError::Forged)?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    // Each candidate is compared in constant time (`subtle`), and all are compared.
    let matched = signatures.iter().fold(subtle::Choice::from(0), |any, candidate| {
        any | subtle::ConstantTimeEq::ct_eq(expected.as_slice(), candidate.as_slice())
    });
    if bool::from(matched) {
        Ok(())
    } else {
        Err(SignatureError::Forged)
    }
}

fn answer(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": message }))
}

/// The handler.
pub(crate) async fn receive(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    use futures::StreamExt as _;
    let Some(secret) = state.stripe_webhook_secret.as_ref() else {
        return answer(StatusCode::SERVICE_UNAVAILABLE, "billing sync is not configured");
    };
    let mut payload = payload;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else {
            return answer(StatusCode::BAD_REQUEST, "the body could not be read");
        };
        if body.len() + chunk.len() > MAX_WEBHOOK_BYTES {
            return answer(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large");
        }
        body.extend_from_slice(&chunk);
    }
    let Some(header) = req.headers().get("Stripe-Signature").and_then(|v| v.to_str().ok()) else {
        return answer(StatusCode::BAD_REQUEST, "the Stripe-Signature header is missing");
    };
    let now = state.domain.clock.now().timestamp();
    if let Err(e) = verify_signature(secret.expose_secret().as_bytes(), header, &body, now) {
        tracing::warn!(reason = e.message(), "refused a Stripe webhook");
        return answer(StatusCode::BAD_REQUEST, e.message());
    }
    let event = match serde_json::from_slice(&body)
        .map_err(|_| "the body is not JSON")
        .and_then(|v| StripeEvent::from_stripe(&v).map_err(|_| "the body is not a Stripe event"))
    {
        Ok(event) => event,
        Err(message) => return answer(StatusCode::BAD_REQUEST, message),
    };
    let (event_id, event_type) = (event.event_id.clone(), event.event_type.clone());
    match state.domain.record_stripe_event(event).await {
        Ok(receipt) => {
            let duplicate = receipt == EventReceipt::Duplicate;
            tracing::info!(event_id, event_type, duplicate, "Stripe event received");
            HttpResponse::Ok().json(serde_json::json!({ "received": true, "duplicate": duplicate }))
        }
        Err(e) => {
            tracing::error!(event_id, error = %e, "could not store a Stripe event (Stripe retries)");
            answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the event could not be stored; retry",
            )
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test";

    fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signatures_are_checked_as_stripe_documents() {
        let body = br#"{"id":"evt_1"}"#;
        let good = sign(SECRET, 1000, body);
        let other = sign(b"whsec_old", 1000, body);
        let cases = [
            (format!("t=1000,v1={good}"), Ok(())),
            (format!("t=1000,v1={other},v1={good}"), Ok(())),
            (format!("t=1000,v0=abc,v1={good},scheme=x"), Ok(())),
            (format!("t=1000,v1=nothex,v1={good}"), Ok(())),
            (format!("t=1000,v1={other}"), Err(SignatureError::Forged)),
            (format!("t=1001,v1={good}"), Err(SignatureError::Forged)),
            (format!("t=1000,v0={good}"), Err(SignatureError::Malformed)),
            (format!("v1={good}"), Err(SignatureError::Malformed)),
            ("t=1000".to_owned(), Err(SignatureError::Malformed)),
            ("garbage".to_owned(), Err(SignatureError::Malformed)),
            (format!("t=abc,v1={good}"), Err(SignatureError::Malformed)),
            (format!("t=1000,t=1000,v1={good}"), Err(SignatureError::Malformed)),
        ];
        for (header, expected) in cases {
            assert_eq!(verify_signature(SECRET, &header, body, 1000), expected, "{header}");
        }
    }

    #[test]
    fn the_tolerance_is_300_seconds_either_way() {
        let body = b"{}";
        for (t, now, expected) in [
            (1000, 1300, Ok(())),
            (1000, 700, Ok(())),
            (1000, 1301, Err(SignatureError::Stale)),
            (1000, 699, Err(SignatureError::Stale)),
        ] {
            let header = format!("t={t},v1={}", sign(SECRET, t, body));
            assert_eq!(verify_signature(SECRET, &header, body, now), expected, "{t} at {now}");
        }
    }

    #[test]
    fn a_changed_body_does_not_verify() {
        let header = format!("t=1000,v1={}", sign(SECRET, 1000, b"{\"a\":1}"));
        assert_eq!(
            verify_signature(SECRET, &header, b"{\"a\":2}", 1000),
            Err(SignatureError::Forged)
        );
    }
}
