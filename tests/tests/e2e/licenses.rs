//! ERP/CRM retries, the license lifecycle, filters and the audit trail, end to end.

#![expect(clippy::unwrap_used, reason = "tests")]

use futures::future::join_all;
use serde_json::{Value, json};
use tests::{Backend, TestServer, error_code, on_both_databases, seed};

const ISSUE: &str = "mutation($in: IssueLicenseInput!) { issueLicense(input: $in) { id key version } }";

async fn erp_retries(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let s = seed(&server, &token).await;

    // upsertCustomer twice (and concurrently) with one externalId: one customer.
    let upsert = "mutation($n: String!) { upsertCustomer(input: {externalId: \"ERP-7\", name: $n}) { id name } }";
    let first = server.ok(&token, upsert, json!({ "n": "Globex" })).await;
    let calls = (0..8).map(|_| server.ok(&token, upsert, json!({ "n": "Globex" })));
    for again in join_all(calls).await {
        assert_eq!(again["upsertCustomer"]["id"], first["upsertCustomer"]["id"]);
    }
    let renamed = server.ok(&token, upsert, json!({ "n": "Globex Corp" })).await;
    assert_eq!(renamed["upsertCustomer"]["id"], first["upsertCustomer"]["id"]);
    assert_eq!(renamed["upsertCustomer"]["name"], "Globex Corp");
    let count = server
        .ok(&token, "{ customers(search: \"ERP-7\") { totalCount } }", json!({}))
        .await;
    assert_eq!(count["customers"]["totalCount"], 1);

    // issueLicense with one idempotency key: one license, also when 10 calls race.
    let input = json!({ "in": { "policyId": s.policy, "customerExternalId": "ERP-7", "idempotencyKey": "order-42" } });
    let calls = (0..10).map(|_| server.gql(Some(&token), ISSUE, input.clone()));
    let results = join_all(calls).await;
    let ids: Vec<&Value> = results.iter().map(|r| &r["data"]["issueLicense"]["id"]).collect();
    assert!(
        ids.iter().all(|id| id.is_string() && *id == ids[0]),
        "same license for every retry: {results:?}"
    );
    let key = results[0]["data"]["issueLicense"]["key"].clone();
    assert!(results.iter().all(|r| r["data"]["issueLicense"]["key"] == key));

    // Same key, other input: IDEMPOTENCY_CONFLICT, nothing issued.
    let other = json!({ "in": { "policyId": s.policy, "customerExternalId": "ERP-7", "idempotencyKey": "order-42", "maxActivations": 9 } });
    let conflict = server.gql(Some(&token), ISSUE, other).await;
    assert_eq!(error_code(&conflict), Some("IDEMPOTENCY_CONFLICT"), "{conflict}");
    let licenses = server
        .ok(
            &token,
            "query($c: ID) { licenses(filter: {customerId: $c}) { totalCount } }",
            json!({ "c": first["upsertCustomer"]["id"] }),
        )
        .await;
    assert_eq!(licenses["licenses"]["totalCount"], 1);
    let issued_events = server
        .ok(
            &token,
            "query($t: ID) { auditEvents(targetId: $t) { totalCount nodes { action } } }",
            json!({ "t": ids[0] }),
        )
        .await;
    assert_eq!(
        issued_events["auditEvents"]["totalCount"], 1,
        "one audit event for one issue: {issued_events}"
    );
}
on_both_databases!(erp_retries_never_double_issue, erp_retries);

async fn lifecycle(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let s = seed(&server, &token).await;
    let get = "query($id: ID) { license(id: $id) { status statusReason version expiresAt maxActivations entitlements metadata } }";
    let v1 = server.ok(&token, get, json!({ "id": s.license })).await["license"].clone();
    assert_eq!(v1["status"], "ACTIVE");
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["maxActivations"], 5);
    assert_eq!(v1["entitlements"], json!(["pro"]));

    // Metadata alone does not change the license file: no version bump.
    let upd = "mutation($in: UpdateLicenseInput!) { updateLicense(input: $in) { version expiresAt maxActivations entitlements metadata } }";
    let meta = server
        .ok(
            &token,
            upd,
            json!({ "in": { "id": s.license, "metadata": { "order": "SO-1" } } }),
        )
        .await;
    assert_eq!(meta["updateLicense"]["version"], 1);
    assert_eq!(meta["updateLicense"]["metadata"], json!({ "order": "SO-1" }));
    // Expiry, seats and entitlements do.
    let changed = server
        .ok(&token, upd, json!({ "in": { "id": s.license, "expiresAt": "2031-01-01T00:00:00Z", "maxActivations": 10, "entitlements": ["pro", "sso"] } }))
        .await;
    assert_eq!(changed["updateLicense"]["version"], 2);
    assert_eq!(changed["updateLicense"]["maxActivations"], 10);
    assert_eq!(changed["updateLicense"]["entitlements"], json!(["pro", "sso"]));
    assert!(
        changed["updateLicense"]["expiresAt"]
            .as_str()
            .unwrap()
            .starts_with("2031-01-01T00:00:00")
    );
    // Explicit null clears: perpetual, unlimited.
    let cleared = server
        .ok(
            &token,
            upd,
            json!({ "in": { "id": s.license, "expiresAt": null, "maxActivations": null } }),
        )
        .await;
    assert_eq!(cleared["updateLicense"]["expiresAt"], Value::Null);
    assert_eq!(cleared["updateLicense"]["maxActivations"], Value::Null);
    assert_eq!(cleared["updateLicense"]["version"], 3);

    // Renew: from now when there is no expiry, by the policy's 30 days.
    let renewed = server
        .ok(
            &token,
            "mutation($id: ID!) { renewLicense(id: $id) { expiresAt version } }",
            json!({ "id": s.license }),
        )
        .await;
    assert!(renewed["renewLicense"]["expiresAt"].is_string());
    assert_eq!(renewed["renewLicense"]["version"], 4);

    let suspended = server
        .ok(
            &token,
            "mutation($id: ID!) { suspendLicense(id: $id, reason: \"unpaid\") { status statusReason version } }",
            json!({ "id": s.license }),
        )
        .await;
    assert_eq!(
        suspended["suspendLicense"],
        json!({ "status": "SUSPENDED", "statusReason": "unpaid", "version": 5 })
    );
    let filtered = server
        .ok(
            &token,
            "{ licenses(filter: {status: SUSPENDED}) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(filtered["licenses"]["totalCount"], 1);
    let reinstated = server
        .ok(
            &token,
            "mutation($id: ID!) { reinstateLicense(id: $id) { status version } }",
            json!({ "id": s.license }),
        )
        .await;
    assert_eq!(
        reinstated["reinstateLicense"],
        json!({ "status": "ACTIVE", "version": 6 })
    );
    let revoked = server
        .ok(
            &token,
            "mutation($id: ID!) { revokeLicense(id: $id, reason: \"fraud\") { status version } }",
            json!({ "id": s.license }),
        )
        .await;
    assert_eq!(revoked["revokeLicense"], json!({ "status": "REVOKED", "version": 7 }));
    for op in ["reinstateLicense", "renewLicense", "suspendLicense"] {
        let res = server
            .gql(
                Some(&token),
                &format!("mutation($id: ID!) {{ {op}(id: $id) {{ id }} }}"),
                json!({ "id": s.license }),
            )
            .await;
        assert_eq!(error_code(&res), Some("LICENSE_REVOKED"), "{op}: {res}");
    }
}
on_both_databases!(license_lifecycle_bumps_versions, lifecycle);

async fn filters(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let s = seed(&server, &token).await;
    // A second customer with a license expiring soon, and a third license without a customer.
    server.ok(&token, "mutation { upsertCustomer(input: {externalId: \"C-2\", name: \"Initech\", email: \"it@initech.test\"}) { id } }", json!({})).await;
    let soon = server
        .ok(
            &token,
            ISSUE,
            json!({ "in": { "policyId": s.policy, "customerExternalId": "C-2", "expiresAt": "2030-01-01T00:00:00Z" } }),
        )
        .await["issueLicense"]["id"]
        .clone();
    server
        .ok(
            &token,
            ISSUE,
            json!({ "in": { "policyId": s.policy, "expiresAt": "2040-01-01T00:00:00Z" } }),
        )
        .await;

    let count = |filter: Value| {
        let server = &server;
        let token = token.clone();
        async move {
            server
                .ok(
                    &token,
                    "query($f: LicenseFilter) { licenses(filter: $f) { totalCount nodes { id } } }",
                    json!({ "f": filter }),
                )
                .await["licenses"]
                .clone()
        }
    };
    assert_eq!(count(json!({})).await["totalCount"], 3);
    assert_eq!(
        count(json!({ "search": "initech" })).await["nodes"],
        json!([{ "id": soon }])
    );
    assert_eq!(
        count(json!({ "search": s.key.to_lowercase() })).await["nodes"],
        json!([{ "id": s.license }])
    );
    assert_eq!(
        count(json!({ "expiresBefore": "2035-01-01T00:00:00Z" })).await["totalCount"],
        2
    );
    assert_eq!(
        count(json!({ "productId": s.product, "status": "ACTIVE" })).await["totalCount"],
        3
    );
    assert_eq!(count(json!({ "status": "EXPIRED" })).await["totalCount"], 0);
    assert_eq!(
        count(json!({ "customerId": s.customer })).await["nodes"],
        json!([{ "id": s.license }])
    );

    // Pagination walks every license exactly once.
    let mut seen = Vec::new();
    let mut after: Value = Value::Null;
    loop {
        let page = server
            .ok(&token, "query($a: String) { licenses(first: 2, after: $a) { edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }", json!({ "a": after }))
            .await["licenses"]
            .clone();
        for edge in page["edges"].as_array().unwrap() {
            seen.push(edge["node"]["id"].clone());
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen.len(), 3);
    let bad_cursor = server
        .gql(Some(&token), "{ licenses(after: \"!!\") { totalCount } }", json!({}))
        .await;
    assert_eq!(error_code(&bad_cursor), Some("INVALID_INPUT"));

    // Lookup by key, in any typing; a malformed key is simply not found.
    let by_key = server
        .ok(
            &token,
            "query($k: String) { license(key: $k) { id } }",
            json!({ "k": s.key.replace('-', " ").to_lowercase() }),
        )
        .await;
    assert_eq!(by_key["license"]["id"], json!(s.license));
    let missing = server
        .ok(
            &token,
            "query($k: String) { license(key: $k) { id } }",
            json!({ "k": "nope" }),
        )
        .await;
    assert_eq!(missing["license"], Value::Null);
}
on_both_databases!(license_filters_and_pagination, filters);

async fn bad_input(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let s = seed(&server, &token).await;
    let cases = [
        (
            "mutation { createProduct(input: {name: \"\", code: \"x\"}) { id } }",
            json!({}),
        ),
        (
            "mutation { createProduct(input: {name: \"Dup\", code: \"pro\"}) { id } }",
            json!({}),
        ),
        (
            "mutation { createProduct(input: {name: \"X\", code: \"has space\"}) { id } }",
            json!({}),
        ),
        (
            "mutation($p: ID!) { createPolicy(input: {productId: $p, name: \"T\", trial: true}) { id } }",
            json!({ "p": s.product }),
        ),
        (
            "mutation($p: ID!) { createPolicy(input: {productId: $p, name: \"T\", maxActivations: 0}) { id } }",
            json!({ "p": s.product }),
        ),
        (
            "mutation($p: ID!) { createPolicy(input: {productId: $p, name: \"T\", meters: [{code: \"a\"}, {code: \"a\"}]}) { id } }",
            json!({ "p": s.product }),
        ),
        (
            "mutation($p: ID!) { createPolicy(input: {productId: $p, name: \"T\", heartbeatIntervalSeconds: 9000000000000000}) { id } }",
            json!({ "p": s.product }),
        ),
        (
            "mutation { upsertCustomer(input: {externalId: \"X\", name: \"X\", email: \"not-an-email\"}) { id } }",
            json!({}),
        ),
        (
            ISSUE,
            json!({ "in": { "policyId": s.policy, "expiresAt": "2001-01-01T00:00:00Z" } }),
        ),
        (ISSUE, json!({ "in": { "policyId": s.policy, "metadata": [1, 2] } })),
        (
            ISSUE,
            json!({ "in": { "policyId": s.policy, "idempotencyKey": "k".repeat(256) } }),
        ),
        (
            "mutation($p: ID!) { renewLicense(id: $p) { id } }",
            json!({ "p": "not-a-license" }),
        ),
    ];
    let before = server
        .ok(
            &token,
            "{ auditEvents { totalCount } licenses { totalCount } products { totalCount } }",
            json!({}),
        )
        .await;
    for (query, vars) in cases {
        let res = server.gql(Some(&token), query, vars.clone()).await;
        let code = error_code(&res);
        assert!(
            matches!(code, Some("INVALID_INPUT" | "NOT_FOUND")),
            "{query} {vars}: {res}"
        );
        assert!(res["errors"][0]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let after = server
        .ok(
            &token,
            "{ auditEvents { totalCount } licenses { totalCount } products { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(before, after, "bad input changes nothing");
}
on_both_databases!(bad_input_gets_a_code_and_changes_nothing, bad_input);
