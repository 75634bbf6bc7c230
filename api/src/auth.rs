//! Credentials on the wire: staff session JWTs (HS256 under a key derived from the master
//! secret, `kid`, `iss`, `aud` and `exp` checked, the session looked up so logout and password
//! changes end it at once), API tokens (`lsk_...`, looked up by keyed hash) and device tokens
//! (`ldt_...`, verified without a database read).

use chrono::{DateTime, Utc};
use domain::access::{API_TOKEN_PREFIX, Session};
use domain::device_tokens::DEVICE_TOKEN_PREFIX;
use domain::{Actor, Domain};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Issuer of session tokens.
const ISSUER: &str = "licensing";
/// Audience of staff session tokens.
const AUDIENCE: &str = "licensing-staff";
/// Key id of the session-signing key (derived from the master secret).
const SESSION_KID: &str = "session-v1";
/// The one algorithm session tokens may use.
const ALGORITHM: Algorithm = Algorithm::HS256;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    vid: String,
    jti: String,
    iat: i64,
    exp: i64,
}

/// Signs a session JWT for a successful login.
///
/// # Errors
/// [`domain::Error::Internal`] if signing fails.
pub fn session_token(domain: &Domain, session: &Session, now: DateTime<Utc>) -> domain::Result<String> {
    let claims = Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: session.user.id.clone(),
        vid: session.user.vendor_id.clone(),
        jti: session.id.clone(),
        iat: now.timestamp(),
        exp: session.expires_at.timestamp(),
    };
    let mut header = Header::new(ALGORITHM);
    header.kid = Some(SESSION_KID.into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(domain.secrets.session_signing_key()),
    )
    .map_err(|e| domain::Error::Internal(format!("signing a session token: {e}")))
}

/// The caller behind a bearer token: an API token or a staff session JWT.
///
/// # Errors
/// [`domain::Error::Unauthenticated`] for anything that does not verify.
pub async fn authenticate(domain: &Domain, bearer: &str, request_id: Option<String>) -> domain::Result<Actor> {
    if bearer.starts_with(API_TOKEN_PREFIX) {
        return domain.authenticate_api_token(bearer, request_id).await;
    }
    if bearer.starts_with(DEVICE_TOKEN_PREFIX) {
        return domain.authenticate_device_token(bearer, request_id).await;
    }
    let invalid = |why: &str| domain::Error::Unauthenticated(format!("the session token is invalid: {why}"));
    let header = jsonwebtoken::decode_header(bearer).map_err(|_| invalid("malformed"))?;
    if header.alg != ALGORITHM || header.kid.as_deref() != Some(SESSION_KID) {
        return Err(invalid("unknown key or algorithm"));
    }
    let mut validation = Validation::new(ALGORITHM);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 60;
    let data = jsonwebtoken::decode::<Claims>(
        bearer,
        &DecodingKey::from_secret(domain.secrets.session_signing_key()),
        &validation,
    )
    .map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
            domain::Error::Unauthenticated("the session has expired; log in again".into())
        }
        _ => invalid("bad signature or claims"),
    })?;
    let actor = domain
        .authenticate_session(&data.claims.jti, &data.claims.sub, request_id)
        .await?;
    if actor.vendor_id != data.claims.vid {
        return Err(invalid("vendor mismatch"));
    }
    Ok(actor)
}
