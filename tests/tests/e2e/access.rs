//! Roles, API tokens and staff sessions: who may do what, and which credentials are refused.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure should stop the test loudly"
)]

use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::Sha256;
use tests::{Backend, TEST_SECRET, TestServer, api_token, error_code, on_both_databases, seed};

/// Every mutation with arguments that would succeed for an OWNER (ids from `s`).
fn mutations(s: &tests::Seeded) -> Vec<(&'static str, String, Value)> {
    vec![
        (
            "updateVendorSettings",
            "mutation { updateVendorSettings(input: {alertEmails: [\"a@b.test\"]}) { id } }".into(),
            json!({}),
        ),
        (
            "rotateSigningKey",
            "mutation { rotateSigningKey { kid } }".into(),
            json!({}),
        ),
        (
            "createProduct",
            "mutation { createProduct(input: {name: \"N\", code: \"n\"}) { id } }".into(),
            json!({}),
        ),
        (
            "createPolicy",
            "mutation($p: ID!) { createPolicy(input: {productId: $p, name: \"P\"}) { id } }".into(),
            json!({ "p": s.product }),
        ),
        (
            "upsertCustomer",
            "mutation { upsertCustomer(input: {externalId: \"Z\", name: \"Z\"}) { id } }".into(),
            json!({}),
        ),
        (
            "issueLicense",
            "mutation($p: ID!) { issueLicense(input: {policyId: $p}) { id } }".into(),
            json!({ "p": s.policy }),
        ),
        (
            "updateLicense",
            "mutation($l: ID!) { updateLicense(input: {id: $l, maxActivations: 7}) { id } }".into(),
            json!({ "l": s.license }),
        ),
        (
            "renewLicense",
            "mutation($l: ID!) { renewLicense(id: $l) { id } }".into(),
            json!({ "l": s.license }),
        ),
        (
            "suspendLicense",
            "mutation($l: ID!) { suspendLicense(id: $l) { id } }".into(),
            json!({ "l": s.license }),
        ),
        (
            "reinstateLicense",
            "mutation($l: ID!) { reinstateLicense(id: $l) { id } }".into(),
            json!({ "l": s.license }),
        ),
        (
            "revokeLicense",
            "mutation($l: ID!) { revokeLicense(id: $l) { id } }".into(),
            json!({ "l": s.license }),
        ),
        (
            "createApiToken",
            "mutation { createApiToken(input: {name: \"t\", role: READ_ONLY}) { token } }".into(),
            json!({}),
        ),
        (
            "createStaffUser",
            "mutation { createStaffUser(input: {email: \"x@y.test\", role: READ_ONLY}) { id } }".into(),
            json!({}),
        ),
    ]
}

async fn roles(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner_token.clone();
    let s = seed(&server, &owner).await;
    let read_only = api_token(&server, &owner, "READ_ONLY").await;
    let integration = api_token(&server, &owner, "INTEGRATION").await;
    let support = api_token(&server, &owner, "SUPPORT").await;
    let admin = api_token(&server, &owner, "ADMIN").await;

    // READ_ONLY reads everything and mutates nothing.
    server.ok(&read_only, "{ viewer { role } products { totalCount } licenses { totalCount } auditEvents { totalCount } signingKeys { kid } }", json!({})).await;
    let before = server.ok(&owner, "{ auditEvents { totalCount } }", json!({})).await;
    for (name, query, vars) in mutations(&s) {
        let res = server.gql(Some(&read_only), &query, vars).await;
        assert_eq!(error_code(&res), Some("FORBIDDEN"), "READ_ONLY {name}: {res}");
    }
    // INTEGRATION cannot manage tokens, staff or vendor settings.
    for (name, query, vars) in mutations(&s) {
        if matches!(
            name,
            "updateVendorSettings" | "rotateSigningKey" | "createApiToken" | "createStaffUser"
        ) {
            let res = server.gql(Some(&integration), &query, vars).await;
            assert_eq!(error_code(&res), Some("FORBIDDEN"), "INTEGRATION {name}: {res}");
        }
    }
    let after = server.ok(&owner, "{ auditEvents { totalCount } }", json!({})).await;
    assert_eq!(before, after, "refused mutations change nothing");
    let tokens = server
        .gql(Some(&integration), "{ apiTokens { totalCount } }", json!({}))
        .await;
    assert_eq!(error_code(&tokens), Some("FORBIDDEN"));

    // INTEGRATION does the ERP's daily work; SUPPORT suspends but does not issue.
    server
        .ok(
            &integration,
            "mutation($p: ID!) { issueLicense(input: {policyId: $p}) { id } }",
            json!({ "p": s.policy }),
        )
        .await;
    server
        .ok(
            &support,
            "mutation($l: ID!) { suspendLicense(id: $l) { id } }",
            json!({ "l": s.license }),
        )
        .await;
    let res = server
        .gql(
            Some(&support),
            "mutation($p: ID!) { issueLicense(input: {policyId: $p}) { id } }",
            json!({ "p": s.policy }),
        )
        .await;
    assert_eq!(error_code(&res), Some("FORBIDDEN"));

    // Keys in full for OWNER, ADMIN, SUPPORT; masked for READ_ONLY and INTEGRATION.
    let key_as = |token: String| {
        let server = &server;
        let id = s.license.clone();
        async move {
            server
                .ok(
                    &token,
                    "query($id: ID) { license(id: $id) { key } }",
                    json!({ "id": id }),
                )
                .await["license"]["key"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(key_as(support.clone()).await, s.key);
    assert_eq!(key_as(admin.clone()).await, s.key);
    let masked = key_as(read_only.clone()).await;
    assert_ne!(masked, s.key);
    assert!(
        masked.ends_with(&s.key[s.key.len() - 4..]) && masked.starts_with("XXXXX"),
        "{masked}"
    );
    assert_ne!(key_as(integration.clone()).await, s.key);

    // A token never exceeds its creator's role.
    let res = server
        .gql(
            Some(&admin),
            "mutation { createApiToken(input: {name: \"up\", role: OWNER}) { token } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&res), Some("FORBIDDEN"), "{res}");
    let res = server
        .gql(
            Some(&admin),
            "mutation { createStaffUser(input: {email: \"boss@x.test\", role: OWNER}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&res), Some("FORBIDDEN"), "{res}");
    api_token(&server, &admin, "ADMIN").await;

    // A revoked token is refused at once; an expired one too.
    let id = server
        .ok(&owner, "{ apiTokens { nodes { id role } } }", json!({}))
        .await["apiTokens"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "READ_ONLY")
        .unwrap()["id"]
        .clone();
    server
        .ok(
            &owner,
            "mutation($id: ID!) { revokeApiToken(id: $id) { revokedAt } }",
            json!({ "id": id }),
        )
        .await;
    let res = server.gql(Some(&read_only), "{ viewer { role } }", json!({})).await;
    assert_eq!(error_code(&res), Some("UNAUTHENTICATED"), "{res}");
    let past = server
        .gql(Some(&owner), "mutation { createApiToken(input: {name: \"old\", role: READ_ONLY, expiresAt: \"2001-01-01T00:00:00Z\"}) { token } }", json!({}))
        .await;
    assert_eq!(error_code(&past), Some("INVALID_INPUT"));
    for bogus in ["lsk_nope", "garbage", ""] {
        let res = server.gql(Some(bogus), "{ viewer { role } }", json!({})).await;
        assert_eq!(error_code(&res), Some("UNAUTHENTICATED"), "{bogus}: {res}");
    }
    let res = server.gql(None, "{ viewer { role } }", json!({})).await;
    assert_eq!(error_code(&res), Some("UNAUTHENTICATED"));
}
on_both_databases!(roles_are_enforced_on_every_mutation, roles);

/// The key sessions are signed with, derived from the master secret as the server does.
fn session_key() -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(TEST_SECRET.as_bytes()).unwrap();
    mac.update(b"licensing/session-jwt/v1");
    mac.finalize().into_bytes().to_vec()
}

fn jwt(alg: Algorithm, kid: &str, key: &[u8], claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(key)).unwrap()
}

async fn sessions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner_token.clone();
    let created = server
        .ok(&owner, "mutation { createStaffUser(input: {email: \"Ann@Vendor.test\", name: \"Ann\", role: SUPPORT, password: \"correct horse battery\"}) { id email passwordSet } }", json!({}))
        .await;
    assert_eq!(created["createStaffUser"]["email"], "ann@vendor.test");
    let user_id = created["createStaffUser"]["id"].as_str().unwrap().to_owned();

    let login =
        "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token expiresAt user { id role } } }";
    let wrong = server
        .gql(None, login, json!({ "e": "ann@vendor.test", "p": "wrong password!" }))
        .await;
    assert_eq!(error_code(&wrong), Some("UNAUTHENTICATED"));
    let unknown = server
        .gql(
            None,
            login,
            json!({ "e": "nobody@vendor.test", "p": "wrong password!" }),
        )
        .await;
    assert_eq!(error_code(&unknown), Some("UNAUTHENTICATED"));
    assert_eq!(
        wrong["errors"][0]["message"], unknown["errors"][0]["message"],
        "no user-existence oracle"
    );

    let session = server.ok(&owner, "{ viewer { vendor { id } } }", json!({})).await;
    let vendor_id = session["viewer"]["vendor"]["id"].as_str().unwrap().to_owned();
    let ok = server.ok(&owner, "{ viewer { role } }", json!({})).await;
    assert_eq!(ok["viewer"]["role"], "OWNER");
    let res = server
        .gql(
            None,
            login,
            json!({ "e": "ANN@vendor.test", "p": "correct horse battery" }),
        )
        .await;
    let jwt_token = res["data"]["login"]["token"].as_str().unwrap().to_owned();
    let viewer = server
        .ok(&jwt_token, "{ viewer { role actorKind label } }", json!({}))
        .await;
    assert_eq!(
        viewer["viewer"],
        json!({ "role": "SUPPORT", "actorKind": "STAFF", "label": "ann@vendor.test" })
    );

    // Tokens that must be refused: forged key, alg none, expired, wrong audience, unknown kid.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let session_id = {
        let payload = jwt_token.split('.').nth(1).unwrap();
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        serde_json::from_slice::<Value>(&raw).unwrap()["jti"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let claims = |exp: i64, aud: &str| json!({ "iss": "licensing", "aud": aud, "sub": user_id, "vid": vendor_id, "jti": session_id, "iat": now, "exp": exp });
    let key = session_key();
    let forged = [
        (
            "forged",
            jwt(
                Algorithm::HS256,
                "session-v1",
                b"some other key of enough length!!",
                &claims(now + 600, "licensing-staff"),
            ),
        ),
        (
            "expired",
            jwt(
                Algorithm::HS256,
                "session-v1",
                &key,
                &claims(now - 3600, "licensing-staff"),
            ),
        ),
        (
            "wrong audience",
            jwt(Algorithm::HS256, "session-v1", &key, &claims(now + 600, "someone-else")),
        ),
        (
            "unknown kid",
            jwt(
                Algorithm::HS256,
                "other-kid",
                &key,
                &claims(now + 600, "licensing-staff"),
            ),
        ),
        (
            "wrong algorithm",
            jwt(
                Algorithm::HS512,
                "session-v1",
                &key,
                &claims(now + 600, "licensing-staff"),
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({ "alg": "none", "typ": "JWT", "kid": "session-v1" })),
                b64(&claims(now + 600, "licensing-staff"))
            ),
        ),
    ];
    // The same claims correctly signed are accepted: the refusals above are for the reason named.
    let genuine = jwt(
        Algorithm::HS256,
        "session-v1",
        &key,
        &claims(now + 600, "licensing-staff"),
    );
    server.ok(&genuine, "{ viewer { role } }", json!({})).await;
    for (why, token) in forged {
        let res = server.gql(Some(&token), "{ viewer { role } }", json!({})).await;
        assert_eq!(error_code(&res), Some("UNAUTHENTICATED"), "{why}: {res}");
    }

    // Logout revokes the session at once (also for copies of its token).
    server.ok(&jwt_token, "mutation { logout }", json!({})).await;
    for token in [&jwt_token, &genuine] {
        let res = server.gql(Some(token), "{ viewer { role } }", json!({})).await;
        assert_eq!(error_code(&res), Some("UNAUTHENTICATED"), "{res}");
    }

    // The same email in two vendors: a wrong password says nothing more than for anyone else;
    // the right one logs in to the vendor whose password it is.
    let (_, other_owner) = server.create_vendor("Other", "other", "boss@other.test");
    let bob = "mutation($p: String!) { createStaffUser(input: {email: \"bob@vendor.test\", role: ADMIN, password: $p}) { id } }";
    server.ok(&owner, bob, json!({ "p": "bob in vendor one" })).await;
    server.ok(&other_owner, bob, json!({ "p": "bob in vendor two" })).await;
    let wrong_bob = server
        .gql(None, login, json!({ "e": "bob@vendor.test", "p": "nobody's password" }))
        .await;
    assert_eq!(error_code(&wrong_bob), Some("UNAUTHENTICATED"), "{wrong_bob}");
    // Changing your own password keeps the session you changed it with and ends the others.
    let first = server
        .gql(None, login, json!({ "e": "bob@vendor.test", "p": "bob in vendor one" }))
        .await;
    let first = first["data"]["login"]["token"].as_str().unwrap().to_owned();
    let second = server
        .gql(None, login, json!({ "e": "bob@vendor.test", "p": "bob in vendor one" }))
        .await;
    let second = second["data"]["login"]["token"].as_str().unwrap().to_owned();
    let me = server.ok(&first, "{ viewer { actorId } }", json!({})).await["viewer"]["actorId"].clone();
    server
        .ok(
            &first,
            "mutation($id: ID!) { setStaffPassword(userId: $id, password: \"a brand new password\") { id } }",
            json!({ "id": me }),
        )
        .await;
    server.ok(&first, "{ viewer { role } }", json!({})).await;
    assert_eq!(
        error_code(&server.gql(Some(&second), "{ viewer { role } }", json!({})).await),
        Some("UNAUTHENTICATED")
    );

    // Login attempts are rate limited per client address and email, whatever address the
    // client claims in X-Forwarded-For.
    let mut limited = None;
    for i in 0..8 {
        let res: Value = server
            .http()
            .post(format!("{}/graphql", server.base_url))
            .header("x-forwarded-for", format!("10.0.0.{i}"))
            .json(&json!({ "query": login, "variables": { "e": "ann@vendor.test", "p": "wrong password!" } }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if error_code(&res) == Some("RATE_LIMITED") {
            limited = Some(res);
            break;
        }
    }
    let limited = limited.expect("the 6th attempt within a minute is refused");
    assert!(limited["errors"][0]["extensions"]["retryAfter"].as_u64().is_some());
}
on_both_databases!(sessions_and_forged_tokens, sessions);

fn b64(value: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

async fn signing_keys(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner_token.clone();
    let keys = server
        .ok(
            &owner,
            "{ signingKeys { kid algorithm active publicKeyPem } }",
            json!({}),
        )
        .await;
    let first = keys["signingKeys"][0].clone();
    assert_eq!(first["active"], true);
    assert_eq!(first["algorithm"], "ed25519");
    assert!(
        first["publicKeyPem"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    let rotated = server
        .ok(&owner, "mutation { rotateSigningKey { kid active } }", json!({}))
        .await;
    assert_ne!(rotated["rotateSigningKey"]["kid"], first["kid"]);
    let keys = server.ok(&owner, "{ signingKeys { kid active } }", json!({})).await;
    assert_eq!(
        keys["signingKeys"],
        json!([
            { "kid": rotated["rotateSigningKey"]["kid"], "active": true },
            { "kid": first["kid"], "active": false },
        ])
    );
}
on_both_databases!(signing_keys_rotate_and_stay_listed, signing_keys);
