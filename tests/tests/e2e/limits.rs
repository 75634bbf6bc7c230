//! The HTTP surface and its limits: body cap, batching, GET mutations, depth, complexity,
//! page size, error masking, production mode, health, metrics and GraphiQL.

#![expect(clippy::unwrap_used, reason = "tests")]

use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use tests::{Backend, TestServer, error_code, on_both_databases, seed};

async fn limits(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let s = seed(&server, &token).await;
    let url = format!("{}/graphql", server.base_url);
    let http = server.http();
    let before = server.audit_count(&token).await;

    // Too deep: 11 levels (through introspection too).
    let deep = "{ licenses { nodes { policy { product { id } } } } __type(name: \"License\") { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } }";
    let res = server.gql(Some(&token), deep, json!({})).await;
    assert_eq!(error_code(&res), Some("QUERY_TOO_COMPLEX"), "{res}");
    assert_eq!(res["data"], Value::Null);
    // The limits hold for operations and fragments named like introspection fields.
    let sneaky = "query __schema { ...__type } fragment __type on Query { licenses(first: 100) { nodes { policy { meters { code } product { id name code } } customer { id name email externalId } product { id name } } } }";
    let res = server.gql(Some(&token), sneaky, json!({})).await;
    assert_eq!(error_code(&res), Some("QUERY_TOO_COMPLEX"), "{res}");
    // Too complex: wide aliases under a full page.
    let aliases: String = (0..30).map(|i| format!("a{i}: id ")).collect();
    let res = server
        .gql(
            Some(&token),
            &format!("{{ licenses(first: 100) {{ nodes {{ {aliases} }} }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(error_code(&res), Some("QUERY_TOO_COMPLEX"), "{res}");
    // A mutation inside an over-complex document does not run.
    let res = server
        .gql(
            Some(&token),
            &format!(
                "mutation {{ {} }}",
                (0..200)
                    .map(|i| format!(
                        "m{i}: rotateSigningKey {{ kid algorithm publicKeyPem active createdAt retiredAt }}"
                    ))
                    .collect::<String>()
            ),
            json!({}),
        )
        .await;
    assert_eq!(error_code(&res), Some("QUERY_TOO_COMPLEX"), "{res}");
    // Too many directives.
    let directives: String = (0..11).map(|_| "@include(if: true) ").collect();
    let res = server
        .gql(
            Some(&token),
            &format!("{{ viewer {directives} {{ role }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(error_code(&res), Some("QUERY_TOO_COMPLEX"), "{res}");
    // first outside 1..=100.
    for first in [0, -1, 1000] {
        let res = server
            .gql(
                Some(&token),
                &format!("{{ licenses(first: {first}) {{ totalCount }} }}"),
                json!({}),
            )
            .await;
        assert_eq!(error_code(&res), Some("INVALID_INPUT"), "first {first}: {res}");
    }

    // A document that validated once runs on the fast path afterwards: its variables are
    // still checked, and so are the limits.
    let paged = "query($n: Int) { licenses(first: $n) { totalCount } }";
    for _ in 0..2 {
        server.ok(&token, paged, json!({ "n": 5 })).await;
    }
    for bad in [json!({ "n": "five" }), json!({ "n": 1000 }), json!({ "n": 2.5 })] {
        let res = server.gql(Some(&token), paged, bad.clone()).await;
        assert_eq!(error_code(&res), Some("INVALID_INPUT"), "{bad}: {res}");
    }
    let wide = format!(
        "query($n: Int) {{ licenses(first: $n) {{ nodes {{ {} }} }} }}",
        (0..12).map(|i| format!("a{i}: id ")).collect::<String>()
    );
    server.ok(&token, &wide, json!({ "n": 2 })).await;
    let res = server.gql(Some(&token), &wide, json!({ "n": 100 })).await;
    assert_eq!(
        error_code(&res),
        Some("QUERY_TOO_COMPLEX"),
        "the cached document's cost follows its variables: {res}"
    );

    // A 1 MB body: 413 before parsing, unless staff or an API token send it (files staff
    // upload are large); 9 MB is too much for anyone.
    let big = json!({ "query": format!("{{ viewer {{ role }} }} #{}", "x".repeat(1 << 20)) });
    let res = http.post(&url).json(&big).send().await.unwrap();
    assert_eq!(res.status(), 413, "anonymous");
    let res = http
        .post(&url)
        .bearer_auth("lsk_not-a-token")
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413, "a token that does not authenticate");
    let res = http.post(&url).bearer_auth(&token).json(&big).send().await.unwrap();
    assert_eq!(res.status(), 200, "an API token");
    let huge = json!({ "query": format!("{{ viewer {{ role }} }} #{}", "x".repeat(9 << 20)) });
    let res = http.post(&url).bearer_auth(&token).json(&huge).send().await.unwrap();
    assert_eq!(res.status(), 413, "an API token, 9 MB");
    // A batch: 400.
    let res = http
        .post(&url)
        .bearer_auth(&token)
        .json(&json!([{ "query": "{ viewer { role } }" }, { "query": "{ viewer { role } }" }]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["errors"][0]["extensions"]["code"],
        "INVALID_INPUT"
    );
    // Malformed JSON: 400.
    let res = http
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // A mutation by GET: refused, nothing executed.
    let res = http
        .get(&url)
        .bearer_auth(&token)
        .query(&[(
            "query",
            format!("mutation {{ suspendLicense(id: \"{}\") {{ id }} }}", s.license),
        )])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(
        res.json::<Value>().await.unwrap()["errors"][0]["extensions"]["code"],
        "INVALID_INPUT"
    );
    // A query by GET works.
    let res = http
        .get(&url)
        .bearer_auth(&token)
        .query(&[("query", "{ viewer { role } }")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["data"]["viewer"]["role"], "OWNER");

    let status = server
        .ok(
            &token,
            "query($id: ID) { license(id: $id) { status } }",
            json!({ "id": s.license }),
        )
        .await;
    assert_eq!(status["license"]["status"], "ACTIVE");
    assert_eq!(
        server.audit_count(&token).await,
        before,
        "nothing above changed anything"
    );
}
on_both_databases!(request_limits_execute_nothing, limits);

async fn database_failure(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    seed(&server, &token).await;
    let db = server.database().await;
    db.execute_unprepared("ALTER TABLE products RENAME TO products_gone")
        .await
        .unwrap();
    let res = server
        .gql(Some(&token), "{ products { nodes { id name } } }", json!({}))
        .await;
    assert_eq!(error_code(&res), Some("INTERNAL"), "{res}");
    let request_id = res["errors"][0]["extensions"]["requestId"].as_str().unwrap();
    assert_eq!(request_id.len(), 36);
    let text = res.to_string().to_lowercase();
    for leak in [
        "products_gone",
        "select",
        "sql",
        "relation",
        "no such table",
        "/tmp",
        "panicked",
    ] {
        assert!(!text.contains(leak), "the error leaks {leak:?}: {res}");
    }
    // The cause is in the log, under the same request id.
    let log = server.log();
    assert!(
        log.contains(request_id) && log.contains("products"),
        "cause logged with the request id:\n{log}"
    );
    db.execute_unprepared("ALTER TABLE products_gone RENAME TO products")
        .await
        .unwrap();
    server.ok(&token, "{ products { nodes { id } } }", json!({})).await;
}
on_both_databases!(database_failure_is_internal_with_request_id, database_failure);

async fn surface(backend: Backend) {
    let server = TestServer::start(backend).await;
    let http = server.http();
    let base = &server.base_url;
    let res = http.get(format!("{base}/graphql")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().to_lowercase().contains("graphiql"));
    assert_eq!(http.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["status"],
        "ready"
    );
    server.ok(&server.owner_token, "{ viewer { role } }", json!({})).await;
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("licensing_http_requests_total{route=\"/graphql\",status=\"200\"}"),
        "{metrics}"
    );
    // First start printed the owner token once and kept it in DATA_DIR/owner-token, mode 0600.
    let log = server.log();
    assert!(
        log.contains("GraphiQL: http://") && log.contains(&server.owner_token),
        "{log}"
    );
    let mode = std::fs::metadata(server.data_dir.path().join("owner-token"))
        .unwrap()
        .permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    // Introspection works in development, including the deep query GraphiQL sends...
    let res = server
        .gql(Some(&server.owner_token), GRAPHIQL_INTROSPECTION, json!({}))
        .await;
    assert!(res.get("errors").is_none(), "{res}");
    assert_eq!(res["data"]["__schema"]["queryType"]["name"], "Query");
    // ...but a pure introspection document deeper than that is still refused.
    let nested = format!(
        "{{ __type(name: \"License\") {{ {} name {} }} }}",
        "ofType { ".repeat(15),
        "}".repeat(15)
    );
    let res = server.gql(Some(&server.owner_token), &nested, json!({})).await;
    assert_eq!(error_code(&res), Some("QUERY_TOO_COMPLEX"), "{res}");
}

/// The introspection query GraphiQL (graphql-js `getIntrospectionQuery`) sends: depth 13.
const GRAPHIQL_INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}
"#;
on_both_databases!(http_surface_health_metrics_graphiql, surface);

async fn production(backend: Backend) {
    let server = TestServer::start_with(backend, &[("LICENSING_ENV", "production")]).await;
    let res = server
        .gql(
            Some(&server.owner_token),
            "{ __schema { queryType { name } } __type(name: \"License\") { name } }",
            json!({}),
        )
        .await;
    assert!(
        res["data"]["__schema"].is_null() && res["data"]["__type"].is_null(),
        "introspection is off in production: {res}"
    );
    let res = server
        .gql(Some(&server.owner_token), "{ viewr { role } }", json!({}))
        .await;
    assert!(
        !res.to_string().contains("Did you mean"),
        "no suggestions in production: {res}"
    );
    server.ok(&server.owner_token, "{ viewer { role } }", json!({})).await;
}
on_both_databases!(production_hides_the_schema, production);
