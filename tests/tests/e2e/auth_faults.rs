//! Authentication that does not lie: API tokens authenticate with no write (their last use is
//! written in batches), a database failure while authenticating is `INTERNAL` with a request id
//! (never `UNAUTHENTICATED`), tokens follow their creator's role and state (`updateStaffUser`),
//! and device calls on a stopped license or a device without a seat answer their codes.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure should stop the test loudly"
)]

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait as _, SqliteTransactionMode, TransactionOptions, TransactionTrait as _};
use serde_json::{Value, json};
use tests::{
    Backend, TestServer, activate, api_token, components, error_code, eventually, license_with_policy,
    on_both_databases,
};

const VIEWER: &str = "{ viewer { role } }";
const HEARTBEAT: &str = "mutation { heartbeat { device { id lastSeenAt } } }";

async fn last_used(server: &TestServer, prefix: &str) -> Value {
    let tokens = server
        .ok(
            &server.owner_token,
            "{ apiTokens(first: 100) { nodes { prefix lastUsedAt } } }",
            json!({}),
        )
        .await;
    tokens["apiTokens"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| prefix.starts_with(t["prefix"].as_str().unwrap()))
        .unwrap()["lastUsedAt"]
        .clone()
}

/// With the database's write lock held by someone else (a long migration, a backup, a stuck
/// writer), API tokens still authenticate at once: authentication writes nothing. Their last
/// use reaches `apiTokens { lastUsedAt }` with the next flush once the lock is gone.
async fn no_write(backend: Backend) {
    let server = TestServer::start_with(backend, &[("TOKEN_USAGE_FLUSH_SECS", "1"), ("WORKERS", "off")]).await;
    let token = api_token(&server, &server.owner_token, "READ_ONLY").await;
    assert_eq!(last_used(&server, &token).await, Value::Null, "never used yet");
    let db = server.database().await;
    let lock = match backend {
        Backend::Sqlite => {
            let options = TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            };
            db.begin_with_options(options).await.unwrap()
        }
        Backend::Postgres => {
            let tx = db.begin().await.unwrap();
            tx.execute_unprepared("SELECT id FROM api_tokens FOR UPDATE")
                .await
                .unwrap();
            tx
        }
    };
    let before = chrono::Utc::now();
    for _ in 0..20 {
        let started = Instant::now();
        let res = server.gql(Some(&token), VIEWER, json!({})).await;
        assert_eq!(res["data"]["viewer"]["role"], "READ_ONLY", "{res}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "answered at once, not after waiting for the lock"
        );
    }
    lock.rollback().await.unwrap();
    let written = eventually(Duration::from_secs(30), "lastUsedAt written", || async {
        let at = last_used(&server, &token).await;
        at.as_str().map(str::to_owned)
    })
    .await;
    let written = chrono::DateTime::parse_from_rfc3339(&written).unwrap();
    assert!(
        written >= before - chrono::Duration::seconds(1),
        "{written} is a use from the loop"
    );
}
on_both_databases!(api_tokens_authenticate_without_a_write, no_write);

/// The PostgreSQL database stops accepting connections under a running API: every credential
/// (API token, staff session, device token) is answered `INTERNAL` with the request id, never
/// `UNAUTHENTICATED`; once the database is back the same credentials work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_is_internal_not_unauthenticated() {
    let server = TestServer::start_with(Backend::Postgres, &[("WORKERS", "off")]).await;
    let owner = server.owner_token.clone();
    let token = api_token(&server, &owner, "READ_ONLY").await;
    server
        .ok(
            &owner,
            "mutation { createStaffUser(input: {email: \"ops@vendor.test\", role: SUPPORT, password: \"correct horse battery\"}) { id } }",
            json!({}),
        )
        .await;
    let session = server
        .gql(
            None,
            "mutation { login(email: \"ops@vendor.test\", password: \"correct horse battery\") { token } }",
            json!({}),
        )
        .await["data"]["login"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, _, key) = license_with_policy(&server, &owner, "maxActivations: 2").await;
    let device = activate(&server, &key, "fp-db-down", components("db")).await["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_owned();

    let name = server.database_url.rsplit('/').next().unwrap().to_owned();
    let admin = sea_orm::Database::connect(format!("{}/postgres", std::env::var("LICENSING_TEST_PG_URL").unwrap()))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .await
        .unwrap();
    for (what, credential, query) in [
        ("API token", &token, VIEWER),
        ("session", &session, VIEWER),
        ("device token", &device, HEARTBEAT),
    ] {
        // A device token's generation is cached for 2 s: it reaches the database after that.
        let (res, header) = eventually(Duration::from_secs(15), "an answer from the database", || async {
            let res = server
                .http()
                .post(format!("{}/graphql", server.base_url))
                .bearer_auth(credential)
                .json(&json!({ "query": query }))
                .send()
                .await
                .unwrap();
            let header = res.headers()["x-request-id"].to_str().unwrap().to_owned();
            let body: Value = res.json().await.unwrap();
            assert_ne!(error_code(&body), Some("UNAUTHENTICATED"), "{what}: {body}");
            error_code(&body).is_some().then_some((body, header))
        })
        .await;
        assert_eq!(error_code(&res), Some("INTERNAL"), "{what}: {res}");
        assert_eq!(
            res["errors"][0]["extensions"]["requestId"].as_str(),
            Some(header.as_str()),
            "{what}: the request id to quote: {res}"
        );
    }
    let ready = server
        .http()
        .get(format!("{}/readyz", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);

    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    for (what, credential, role) in [("API token", &token, "READ_ONLY"), ("session", &session, "SUPPORT")] {
        eventually(Duration::from_secs(20), "the credential to work again", || async {
            let res = server.gql(Some(credential), VIEWER, json!({})).await;
            assert_ne!(error_code(&res), Some("UNAUTHENTICATED"), "{what}: {res}");
            (res["data"]["viewer"]["role"] == role).then_some(())
        })
        .await;
    }
    let beat = server.gql(Some(&device), HEARTBEAT, json!({})).await;
    assert!(beat.get("errors").is_none(), "the device token works again: {beat}");
}

async fn staff_id(server: &TestServer, email: &str) -> String {
    let users = server
        .ok(
            &server.owner_token,
            "{ staffUsers(first: 100) { nodes { id email } } }",
            json!({}),
        )
        .await;
    users["staffUsers"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == email)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn login(server: &TestServer, email: &str, password: &str) -> String {
    let res = server
        .gql(
            None,
            "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
            json!({ "e": email, "p": password }),
        )
        .await;
    res["data"]["login"]["token"].as_str().expect("logged in").to_owned()
}

const UPDATE: &str = "mutation($id: ID!, $r: Role, $d: Boolean) { updateStaffUser(id: $id, role: $r, disabled: $d) { id role disabledAt } }";

async fn update(server: &TestServer, token: &str, id: &str, role: Option<&str>, disabled: Option<bool>) -> Value {
    server
        .gql(Some(token), UPDATE, json!({ "id": id, "r": role, "d": disabled }))
        .await
}

async fn role_of(server: &TestServer, token: &str) -> Option<String> {
    let res = server.gql(Some(token), VIEWER, json!({})).await;
    match error_code(&res) {
        None => Some(res["data"]["viewer"]["role"].as_str().unwrap().to_owned()),
        Some("UNAUTHENTICATED") => None,
        Some(other) => panic!("{other}: {res}"),
    }
}

/// Demoting or disabling a staff user caps or kills the API tokens they created (and the
/// tokens those tokens created), at once; the guards refuse changes above the caller's role,
/// to the caller themselves and to the last enabled OWNER, changing nothing.
async fn staff_updates(backend: Backend) {
    let server = TestServer::start_with(backend, &[("WORKERS", "off")]).await;
    let owner = server.owner_token.clone();
    let create = "mutation($e: String!, $r: Role!) { createStaffUser(input: {email: $e, role: $r, password: \"correct horse battery\"}) { id } }";
    for (email, role) in [("ada@vendor.test", "ADMIN"), ("bob@vendor.test", "ADMIN")] {
        server.ok(&owner, create, json!({ "e": email, "r": role })).await;
    }
    let ada_id = staff_id(&server, "ada@vendor.test").await;
    let bob_id = staff_id(&server, "bob@vendor.test").await;
    let owner_user = staff_id(&server, "owner@localhost").await;
    let ada = login(&server, "ada@vendor.test", "correct horse battery").await;
    let bob = login(&server, "bob@vendor.test", "correct horse battery").await;
    let ada_admin = api_token(&server, &ada, "ADMIN").await;
    let ada_integration = api_token(&server, &ada, "INTEGRATION").await;
    let chained = api_token(&server, &ada_admin, "ADMIN").await;
    assert_eq!(role_of(&server, &ada_admin).await.as_deref(), Some("ADMIN"));
    assert_eq!(role_of(&server, &chained).await.as_deref(), Some("ADMIN"));

    // Refused, changing nothing: above the caller's role, the caller themselves, the last
    // OWNER, a caller who may not manage access.
    let audit_before = server.audit_count(&server.owner_token).await;
    let support = api_token(&server, &owner, "SUPPORT").await;
    let audit_before = audit_before + 1;
    for (why, token, id, role, disabled, code) in [
        (
            "an ADMIN makes an OWNER",
            &bob,
            &ada_id,
            Some("OWNER"),
            None,
            "FORBIDDEN",
        ),
        (
            "an ADMIN changes an OWNER",
            &bob,
            &owner_user,
            Some("ADMIN"),
            None,
            "FORBIDDEN",
        ),
        (
            "an ADMIN token changes an OWNER",
            &ada_admin,
            &owner_user,
            None,
            Some(true),
            "FORBIDDEN",
        ),
        ("disabling yourself", &bob, &bob_id, None, Some(true), "INVALID_INPUT"),
        (
            "demoting yourself",
            &bob,
            &bob_id,
            Some("SUPPORT"),
            None,
            "INVALID_INPUT",
        ),
        (
            "the last OWNER demoted",
            &owner,
            &owner_user,
            Some("ADMIN"),
            None,
            "INVALID_INPUT",
        ),
        (
            "the last OWNER disabled",
            &owner,
            &owner_user,
            None,
            Some(true),
            "INVALID_INPUT",
        ),
        (
            "SUPPORT manages access",
            &support,
            &ada_id,
            Some("READ_ONLY"),
            None,
            "FORBIDDEN",
        ),
    ] {
        let res = update(&server, token, id, role, disabled).await;
        assert_eq!(error_code(&res), Some(code), "{why}: {res}");
    }
    let nobody = update(&server, &owner, "no-such-user", Some("SUPPORT"), None).await;
    assert_eq!(error_code(&nobody), Some("NOT_FOUND"), "{nobody}");
    assert_eq!(
        server.audit_count(&server.owner_token).await,
        audit_before,
        "refused changes record nothing"
    );
    assert_eq!(role_of(&server, &bob).await.as_deref(), Some("ADMIN"));

    // Ada demoted to SUPPORT: her session and her tokens act as SUPPORT at most at once.
    let res = update(&server, &owner, &ada_id, Some("SUPPORT"), None).await;
    assert_eq!(res["data"]["updateStaffUser"]["role"], "SUPPORT", "{res}");
    assert_eq!(role_of(&server, &ada).await.as_deref(), Some("SUPPORT"));
    assert_eq!(role_of(&server, &ada_admin).await.as_deref(), Some("SUPPORT"));
    assert_eq!(role_of(&server, &chained).await.as_deref(), Some("SUPPORT"));
    assert_eq!(
        role_of(&server, &ada_integration).await.as_deref(),
        Some("READ_ONLY"),
        "INTEGRATION capped by SUPPORT keeps what both allow: reading"
    );
    let res = server
        .gql(
            Some(&ada_admin),
            "mutation { createApiToken(input: {name: \"more\", role: ADMIN}) { token } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&res), Some("FORBIDDEN"), "{res}");

    // Ada disabled: her sessions end and every token she created (directly or through a
    // token) stops working. Bob, an ADMIN, may do it.
    let res = update(&server, &bob, &ada_id, None, Some(true)).await;
    assert!(res["data"]["updateStaffUser"]["disabledAt"].is_string(), "{res}");
    for token in [&ada, &ada_admin, &ada_integration, &chained] {
        assert_eq!(role_of(&server, token).await, None);
    }
    let relogin = server
        .gql(
            None,
            "mutation { login(email: \"ada@vendor.test\", password: \"correct horse battery\") { token } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&relogin), Some("UNAUTHENTICATED"), "{relogin}");

    // Enabled again as ADMIN: her tokens work at their own role again; her old session stays ended.
    let res = update(&server, &owner, &ada_id, Some("ADMIN"), Some(false)).await;
    assert_eq!(res["data"]["updateStaffUser"]["disabledAt"], Value::Null, "{res}");
    assert_eq!(role_of(&server, &ada_admin).await.as_deref(), Some("ADMIN"));
    assert_eq!(role_of(&server, &ada_integration).await.as_deref(), Some("INTEGRATION"));
    assert_eq!(
        role_of(&server, &ada).await,
        None,
        "disabling ended the session for good"
    );

    // A second OWNER makes the first one's demotion possible; the changes are audited.
    update(&server, &owner, &bob_id, Some("OWNER"), None).await;
    let res = update(&server, &owner, &owner_user, Some("ADMIN"), None).await;
    assert_eq!(res["data"]["updateStaffUser"]["role"], "ADMIN", "{res}");
    let events = server
        .ok(
            &owner,
            "query($t: ID) { auditEvents(targetId: $t, first: 100) { nodes { action } } }",
            json!({ "t": ada_id }),
        )
        .await;
    let updates = events["auditEvents"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "staff_user.update")
        .count();
    assert_eq!(updates, 3, "{events}");
}
on_both_databases!(tokens_follow_their_creator, staff_updates);

/// Heartbeats on a suspended or revoked license answer the license's code and record
/// nothing; `exportLicenseFile` refuses a device that lost its seat.
async fn device_codes(backend: Backend) {
    let server = TestServer::start_with(backend, &[("WORKERS", "off")]).await;
    let owner = server.owner_token.clone();
    let (_, license, key) = license_with_policy(
        &server,
        &owner,
        "maxActivations: 3, heartbeatIntervalSeconds: 300, deadDeviceAction: RELEASE_SEAT",
    )
    .await;
    let activation = activate(&server, &key, "fp-beat", components("beat")).await["data"]["activateDevice"].clone();
    let device = activation["deviceToken"].as_str().unwrap().to_owned();
    let device_id = activation["device"]["id"].clone();
    let seen = server.ok(&device, HEARTBEAT, json!({})).await["heartbeat"]["device"]["lastSeenAt"].clone();

    server
        .ok(
            &owner,
            "mutation($id: ID!) { suspendLicense(id: $id) { id } }",
            json!({ "id": license }),
        )
        .await;
    let res = server.gql(Some(&device), HEARTBEAT, json!({})).await;
    assert_eq!(error_code(&res), Some("LICENSE_SUSPENDED"), "{res}");
    assert_eq!(
        last_seen(&server, &device_id).await,
        seen,
        "a refused heartbeat records nothing"
    );
    server
        .ok(
            &owner,
            "mutation($id: ID!) { reinstateLicense(id: $id) { id } }",
            json!({ "id": license }),
        )
        .await;
    server.ok(&device, HEARTBEAT, json!({})).await;

    // A device past its deadline under RELEASE_SEAT has no seat: no refresh file for it.
    let export = "mutation($d: ID!) { exportLicenseFile(deviceId: $d) }";
    server.ok(&owner, export, json!({ "d": device_id })).await;
    server.set_clock_offset(1300);
    let res = server.gql(Some(&owner), export, json!({ "d": device_id })).await;
    assert_eq!(error_code(&res), Some("INVALID_INPUT"), "{res}");
    assert!(res["errors"][0]["message"].as_str().unwrap().contains("seat"), "{res}");
    server.set_clock_offset(0);

    let activation = activate(&server, &key, "fp-other", components("other")).await["data"]["activateDevice"].clone();
    let other = activation["deviceToken"].as_str().unwrap().to_owned();
    let other_id = activation["device"]["id"].clone();
    let seen = server.ok(&other, HEARTBEAT, json!({})).await["heartbeat"]["device"]["lastSeenAt"].clone();
    server
        .ok(
            &owner,
            "mutation($id: ID!) { revokeLicense(id: $id) { id } }",
            json!({ "id": license }),
        )
        .await;
    let res = server.gql(Some(&other), HEARTBEAT, json!({})).await;
    assert_eq!(error_code(&res), Some("LICENSE_REVOKED"), "{res}");
    assert_eq!(
        last_seen(&server, &other_id).await,
        seen,
        "a refused heartbeat records nothing"
    );
}

async fn last_seen(server: &TestServer, device_id: &Value) -> Value {
    server
        .ok(
            &server.owner_token,
            "query($id: ID!) { device(id: $id) { lastSeenAt } }",
            json!({ "id": device_id }),
        )
        .await["device"]["lastSeenAt"]
        .clone()
}
on_both_databases!(device_calls_answer_the_license_code, device_codes);
