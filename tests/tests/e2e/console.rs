//! The staff console and GraphiQL in a real browser: Debian's `chromium` driven by Playwright
//! for Python (`tests/support/console_browser.py`, run with the venv interpreter that
//! `scripts/test.sh` installs and names in `LICENSING_TEST_PLAYWRIGHT_PYTHON`). This module makes
//! the data through the API, runs the script, and checks through the API what the clicks did.
//! Screenshots of every page land in `target/tmp/console-screenshots/<database>/`; with
//! `UPDATE_SCREENSHOTS=1` the SQLite run also rewrites `docs/console/*.png` for the README.
//!
//! Beside it, a scan of every file `/graphql` and `/console` load (found by following their
//! `src`/`href`, import map, module imports and CSS `url()`s) for absolute URLs: none in our
//! own files; in the vendored libraries only XML namespace names and documentation links in
//! their messages, listed below. The browser run proves the rest: every request it saw went
//! to the server itself.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tests::{
    ACTIVATE, Backend, StripeDouble, TestServer, billing_server_with, components, eventually, license_until,
    on_both_databases, sync_billing, synced, verify_license_file,
};

/// The Python interpreter of the Playwright venv: `LICENSING_TEST_PLAYWRIGHT_PYTHON`, else where
/// `scripts/test.sh` installs it.
fn playwright_python() -> PathBuf {
    tests::test_tool(
        "LICENSING_TEST_PLAYWRIGHT_PYTHON",
        "licensing-tests/playwright/bin/python",
    )
}

const PASSWORD: &str = "console-test-password-1";
/// The note the script types when it acknowledges the anomaly.
const ANOMALY_NOTE: &str = "One build server shared by three customers: confirmed with Initech.";

async fn staff_user(server: &TestServer, owner: &str, email: &str, role: &str) {
    server
        .ok(
            owner,
            "mutation($e: String!, $r: Role!, $p: String!) { createStaffUser(input: {email: $e, name: $e, role: $r, password: $p}) { id } }",
            json!({ "e": email, "r": role, "p": PASSWORD }),
        )
        .await;
}

async fn issue(server: &TestServer, owner: &str, policy: &str, customer: &str) -> (String, String) {
    let data = server
        .ok(
            owner,
            "mutation($p: ID!, $c: String!) { issueLicense(input: {policyId: $p, customerExternalId: $c}) { id key } }",
            json!({ "p": policy, "c": customer }),
        )
        .await;
    (
        data["issueLicense"]["id"].as_str().unwrap().to_owned(),
        data["issueLicense"]["key"].as_str().unwrap().to_owned(),
    )
}

/// Activates device `n` of `key` with `fingerprint` and returns its device token.
async fn activate(server: &TestServer, key: &str, fingerprint: &str, n: usize) -> String {
    let data = server
        .gql(
            None,
            ACTIVATE,
            json!({ "in": { "licenseKey": key, "fingerprint": fingerprint,
                    "components": components(&format!("{n}")), "name": format!("ws-{n:03}"),
                    "hostname": format!("ws-{n:03}.acme.test"), "platform": "linux" } }),
        )
        .await;
    assert!(data.get("errors").is_none(), "activation {n}: {data}");
    data["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The reason the script types when it suspends license C.
const SUSPEND_REASON: &str = "Payment dispute, ticket 4711";
/// License C's policy: 30 days a term, which each renewal adds.
const TEAM_TERM_SECONDS: i64 = 30 * 86_400;

/// Open billing drift for the Billing drift page, made as `billing_reconcile.rs` makes it: a
/// subscription-backed policy, subscriptions on the Stripe stand-in that disagree with the
/// licenses, and a requested reconciliation. Four rows stay open, each needing a person; each is
/// returned with the action its explanation names (the script checks the page shows both).
async fn billing_drift(server: &TestServer, stripe: &StripeDouble, owner: &str) -> Vec<Value> {
    server
        .ok(
            owner,
            "mutation { upsertCustomer(input: {externalId: \"ERP-1003\", name: \"Initech\", billingCustomerId: \"cus_initech\"}) { id } }",
            json!({}),
        )
        .await;
    let product = server
        .ok(
            owner,
            "mutation { createProduct(input: {name: \"Scanner Cloud\", code: \"cloud\"}) { id } }",
            json!({}),
        )
        .await["createProduct"]["id"]
        .clone();
    let policy = server
        .ok(
            owner,
            "mutation($p: ID!) { createPolicy(input: {productId: $p, name: \"Cloud, monthly\", subscriptionBacked: true, billingGraceSeconds: 0}) { id } }",
            json!({ "p": product }),
        )
        .await["createPolicy"]["id"]
        .clone();
    let period_end = Utc::now() + chrono::Duration::days(30);
    for (subscription, customer) in [
        ("sub_initech_site", "cus_initech"), // followed by a license staff suspend
        ("sub_initech_lab", "cus_initech"),  // followed by no license
        ("sub_globex_seats", "cus_globex"),  // followed by an Initech license
    ] {
        stripe.put(StripeDouble::subscription(subscription, customer, "active", period_end));
    }
    let policy = &policy;
    let issue_billed = |subscription: &'static str| async move {
        server
            .ok(
                owner,
                "mutation($p: ID!, $s: String) { issueLicense(input: {policyId: $p, customerExternalId: \"ERP-1003\", billingSubscriptionId: $s}) { id } }",
                json!({ "p": policy, "s": subscription }),
            )
            .await["issueLicense"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let suspended = issue_billed("sub_initech_site").await;
    let mismatched = issue_billed("sub_globex_seats").await;
    issue_billed("sub_initech_s1te").await; // a typo: the billing system has no such subscription
    for id in [&suspended, &mismatched] {
        license_until(server, id, "the first read", |l| {
            synced(l) && l["billing"]["status"] == "ACTIVE"
        })
        .await;
    }
    server
        .ok(
            owner,
            "mutation($id: ID!) { suspendLicense(id: $id, reason: \"chargeback review\") { status } }",
            json!({ "id": suspended }),
        )
        .await;
    let run = sync_billing(server, owner).await;
    assert_eq!(
        (run["error"].clone(), run["driftOpened"].as_i64()),
        (Value::Null, Some(4)),
        "{run}"
    );
    let open = server
        .ok(
            owner,
            "{ billingDrift(first: 50, openOnly: true) { nodes { id kind explanation autoFixed subscriptionId license { id key } } } }",
            json!({}),
        )
        .await["billingDrift"]["nodes"]
        .as_array()
        .unwrap()
        .clone();
    let actions = [
        (
            "CUSTOMER_MISMATCH",
            "correct the customer's billingCustomerId or link the right subscription",
        ),
        ("LICENSE_WITHOUT_SUBSCRIPTION", "correct its billingSubscriptionId"),
        (
            "SUBSCRIPTION_WITHOUT_LICENSE",
            "issue one with billingSubscriptionId, or link an existing license with updateLicense",
        ),
        (
            "SUSPENDED_WHILE_PAID",
            "reinstate the license, or cancel the subscription",
        ),
    ];
    let mut kinds: Vec<&str> = open.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, actions.map(|(kind, _)| kind), "{open:?}");
    open.into_iter()
        .map(|mut row| {
            let action = actions.iter().find(|(kind, _)| row["kind"] == *kind).unwrap().1;
            let explanation = row["explanation"].as_str().unwrap();
            assert!(explanation.contains(action), "{row}");
            assert_eq!(row["autoFixed"], false, "{row}");
            row["action"] = json!(action);
            row
        })
        .collect()
}

/// Some usage over the last days, for the chart.
async fn record_usage(server: &TestServer, device_token: &str) {
    let now = chrono::Utc::now();
    for (day, quantity) in [
        (12, 40),
        (9, 75),
        (7, 30),
        (5, 120),
        (4, 90),
        (2, 60),
        (1, 150),
        (0, 45),
    ] {
        let at = now - chrono::Duration::days(day) - chrono::Duration::minutes(5);
        let data = server
            .gql(
                Some(device_token),
                "mutation($in: RecordUsageInput!) { recordUsage(input: $in) { used } }",
                json!({ "in": { "meter": "scans", "quantity": quantity, "idempotencyKey": format!("u-{day}"),
                        "recordedAt": at.to_rfc3339() } }),
            )
            .await;
        assert!(data.get("errors").is_none(), "usage: {data}");
    }
}

fn screenshots_dir(backend: Backend) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("console-screenshots")
        .join(format!("{backend:?}").to_lowercase())
}

async fn console_in_browser(backend: Backend) {
    let stripe = StripeDouble::start().await;
    let server = billing_server_with(
        backend,
        &stripe.base_url(),
        StripeDouble::SECRET_KEY,
        &[("ANOMALY_SCAN_SECS", "1")],
    )
    .await;
    let owner = server.owner_token.clone();
    staff_user(&server, &owner, "admin@vendor.test", "ADMIN").await;
    staff_user(&server, &owner, "viewer@vendor.test", "READ_ONLY").await;
    for (external, name) in [
        ("ERP-1001", "Acme Corp"),
        ("ERP-1002", "Globex"),
        ("ERP-1003", "Initech"),
        ("ERP-1004", "Umbrella"),
        ("ERP-1005", "Hooli"),
    ] {
        server
            .ok(
                &owner,
                "mutation($e: String!, $n: String!) { upsertCustomer(input: {externalId: $e, name: $n}) { id } }",
                json!({ "e": external, "n": name }),
            )
            .await;
    }
    let product = server
        .ok(
            &owner,
            "mutation { createProduct(input: {name: \"Scanner Pro\", code: \"scanner\"}) { id } }",
            json!({}),
        )
        .await["createProduct"]["id"]
        .clone();
    let policy =
        |fields: &str| format!("mutation($p: ID!) {{ createPolicy(input: {{productId: $p, {fields}}}) {{ id }} }}");
    let site = server
        .ok(
            &owner,
            &policy("name: \"Site, 100 seats\", maxActivations: 100, durationSeconds: 31536000, heartbeatIntervalSeconds: 3600, meters: [{code: \"scans\", limit: 5000, resetPeriod: MONTHLY}]"),
            json!({ "p": product }),
        )
        .await["createPolicy"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let single = server
        .ok(
            &owner,
            &policy("name: \"Single seat\", maxActivations: 1, durationSeconds: 2592000"),
            json!({ "p": product }),
        )
        .await["createPolicy"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // License A fills to 99 of 100 seats here; the script activates the 100th while the
    // console watches. License B (1 seat) is for GraphiQL's subscription.
    let (license_a, key_a) = issue(&server, &owner, &site, "ERP-1001").await;
    let (license_b, key_b) = issue(&server, &owner, &single, "ERP-1002").await;
    let first_device = activate(&server, &key_a, &format!("console-a-{}", 1), 1).await;
    for n in 2..=99 {
        activate(&server, &key_a, &format!("console-a-{n}"), n).await;
    }
    record_usage(&server, &first_device).await;
    // One machine active under licenses of three customers: the anomaly scan flags it.
    for customer in ["ERP-1003", "ERP-1004", "ERP-1005"] {
        let (_, key) = issue(&server, &owner, &site, customer).await;
        activate(&server, &key, "build-server-7", 1).await;
    }
    let anomaly = eventually(Duration::from_secs(60), "the SHARED_FINGERPRINT anomaly", || async {
        let data = server
            .ok(
                &owner,
                "{ anomalies(first: 5, filter: {status: OPEN, kinds: [SHARED_FINGERPRINT]}) { nodes { id } } }",
                json!({}),
            )
            .await;
        data["anomalies"]["nodes"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    // License C (3 of 5 seats) is for the staff actions the script clicks.
    let team = server
        .ok(
            &owner,
            &policy(&format!(
                "name: \"Team, 5 seats\", maxActivations: 5, durationSeconds: {TEAM_TERM_SECONDS}"
            )),
            json!({ "p": product }),
        )
        .await["createPolicy"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (license_c, key_c) = issue(&server, &owner, &team, "ERP-1002").await;
    for n in 201..=203 {
        activate(&server, &key_c, &format!("console-c-{n}"), n).await;
    }
    let devices_c: Vec<String> = server
        .ok(
            &owner,
            "query($id: ID) { license(id: $id) { devices(first: 10) { nodes { id } } } }",
            json!({ "id": license_c }),
        )
        .await["license"]["devices"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(devices_c.len(), 3);
    let drift = billing_drift(&server, &stripe, &owner).await;
    let audit_before = server.audit_count(&owner).await;

    let dir = tempfile::tempdir().unwrap();
    let shots = screenshots_dir(backend);
    std::fs::create_dir_all(&shots).unwrap();
    let docs = (backend == Backend::Sqlite && std::env::var("UPDATE_SCREENSHOTS").as_deref() == Ok("1"))
        .then(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console"));
    let refresh_file = dir.path().join("refresh.lic");
    let config = json!({
        "base_url": server.base_url,
        "admin": { "email": "admin@vendor.test", "password": PASSWORD },
        "read_only": { "email": "viewer@vendor.test", "password": PASSWORD },
        "license_a": { "id": license_a, "key": key_a },
        "license_b": { "id": license_b, "key": key_b },
        "anomaly": anomaly,
        "screenshots": shots,
        "docs": docs,
        "anomaly_note": ANOMALY_NOTE,
        "drift": drift,
        "license_c": { "id": license_c, "devices": devices_c, "suspend_reason": SUSPEND_REASON,
                       "term_seconds": TEAM_TERM_SECONDS },
        "refresh_file": refresh_file,
    });
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/console_browser.py");
    // Async, so the Stripe stand-in (a task of this runtime) keeps answering meanwhile.
    let out = Command::new(playwright_python())
        .arg(&script)
        .arg(&config_path)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "run {} (scripts/test.sh installs it): {e}",
                playwright_python().display()
            )
        });
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the browser test failed:\n{report}\n{}",
        server.log()
    );
    assert!(report.contains("console browser test: all steps passed"), "{report}");

    // What the clicks did, read back through the API: the cap alert of license A was
    // acknowledged by the admin; the read-only user's forged suspension changed nothing.
    let alerts = server
        .ok(
            &owner,
            "{ alerts(first: 100) { nodes { kind acknowledgedAt license { id } } } }",
            json!({}),
        )
        .await;
    let cap_alerts: Vec<&Value> = alerts["alerts"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "ACTIVATION_LIMIT_REACHED" && a["license"]["id"] == json!(license_a))
        .collect();
    assert_eq!(cap_alerts.len(), 1, "{alerts}");
    assert!(cap_alerts[0]["acknowledgedAt"].is_string(), "{alerts}");
    let acknowledged = server
        .ok(
            &owner,
            "query($id: ID!) { anomaly(id: $id) { status note } }",
            json!({ "id": anomaly }),
        )
        .await;
    assert_eq!(
        acknowledged["anomaly"],
        json!({ "status": "ACKNOWLEDGED", "note": ANOMALY_NOTE })
    );
    let license = server
        .ok(
            &owner,
            "query($id: ID) { license(id: $id) { status activeDevices } }",
            json!({ "id": license_a }),
        )
        .await;
    assert_eq!(license["license"], json!({ "status": "ACTIVE", "activeDevices": 100 }));
    // The audit trail has the clicks on license C and its device; the forged suspension of
    // license A left none.
    let audit = server
        .ok(
            &owner,
            "{ auditEvents(first: 100) { totalCount nodes { action targetId actorLabel } } }",
            json!({}),
        )
        .await;
    let events: Vec<(&str, &str, &str)> = audit["auditEvents"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["targetId"].as_str().unwrap_or(""),
                e["actorLabel"].as_str().unwrap(),
            )
        })
        .collect();
    for (action, target) in [
        ("license.suspend", license_c.as_str()),
        ("license.reinstate", license_c.as_str()),
        ("license.renew", license_c.as_str()),
        ("device.release", devices_c[0].as_str()),
    ] {
        assert!(
            events.contains(&(action, target, "admin@vendor.test")),
            "no {action} of {target} by the admin: {audit}"
        );
    }
    assert!(
        !events
            .iter()
            .any(|(action, target, _)| action.starts_with("license.suspend") && *target == license_a),
        "{audit}"
    );
    assert!(server.audit_count(&owner).await > audit_before);

    // License C after the clicks: active again, renewed once, device 1 released, and the
    // refresh file the page offered for device 2 is signed by the vendor's key and says so.
    let c = server
        .ok(
            &owner,
            "query($id: ID) { license(id: $id) { status statusReason issuedAt expiresAt activeDevices devices(first: 10) { nodes { id status } } } }",
            json!({ "id": license_c }),
        )
        .await["license"]
        .clone();
    assert_eq!(
        (c["status"].as_str(), &c["statusReason"]),
        (Some("ACTIVE"), &Value::Null),
        "{c}"
    );
    assert_eq!(c["activeDevices"], 2, "{c}");
    let status_of = |id: &str| {
        c["devices"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .map(|d| d["status"].clone())
    };
    assert_eq!(status_of(&devices_c[0]), Some(json!("RELEASED")), "{c}");
    // The others keep their seats (pending sync, perhaps: they hold a file from before the
    // license's changes).
    for device in &devices_c[1..] {
        let status = status_of(device).unwrap();
        assert!(status == "ACTIVE" || status == "PENDING_SYNC", "{c}");
    }
    let instant = |field: &str| {
        DateTime::parse_from_rfc3339(c[field].as_str().unwrap())
            .unwrap()
            .to_utc()
    };
    let term = (instant("expiresAt") - instant("issuedAt")).num_seconds();
    assert!(
        (2 * TEAM_TERM_SECONDS - 5..=2 * TEAM_TERM_SECONDS + 5).contains(&term),
        "issued for one term and renewed once: {c}"
    );
    let file = std::fs::read_to_string(&refresh_file).unwrap();
    let payload = verify_license_file(&server, &file).await;
    assert_eq!(
        (
            payload.license_id.as_str(),
            payload.device.id.as_str(),
            payload.status.as_str()
        ),
        (license_c.as_str(), devices_c[1].as_str(), "ACTIVE")
    );
    assert_eq!(
        payload.expires_at,
        Some(instant("expiresAt")),
        "the file has the renewed expiry"
    );
    for page in [
        "graphiql",
        "signin",
        "alerts",
        "anomalies",
        "licenses",
        "license",
        "billing",
        "license-actions",
    ] {
        assert!(shots.join(format!("{page}.png")).is_file(), "screenshot {page}");
    }
}

on_both_databases!(console_in_a_real_browser, console_in_browser);

/// Hosts that appear in the vendored libraries' text and are never requested: XML namespace
/// names (`createElementNS`), and documentation links inside messages and comments.
const VENDORED_MENTIONS: &[&str] = &[
    "www.w3.org",       // SVG, MathML, XHTML, XLink and XML namespace names (React, preact, GraphiQL)
    "reactjs.org",      // React's production error messages link its error decoder
    "github.com",       // GraphiQL and its bundled helpers name their repositories
    "en.wikipedia.org", // a comment in a bundled number parser
    "commonmark.org",   // markdown-it's doc comment
    "codemirror.net",   // CodeMirror's error message points to its manual
];

/// The files a page loads, following `src=`/`href=` in HTML, the import map, `import`
/// specifiers of modules and `url()` in CSS; every one relative to the page's origin.
async fn crawl(server: &TestServer, start: &str) -> BTreeMap<String, (String, String)> {
    let mut seen = BTreeMap::new();
    let mut queue = vec![start.to_owned()];
    while let Some(path) = queue.pop() {
        if seen.contains_key(&path) {
            continue;
        }
        let res = server
            .http()
            .get(format!("{}{path}", server.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        let body = res.text().await.unwrap();
        let base = &path[..=path.rfind('/').unwrap()];
        let mut found = Vec::new();
        if content_type.starts_with("text/html") {
            for attr in ["src=\"", "href=\""] {
                found.extend(body.split(attr).skip(1).map(|s| s[..s.find('"').unwrap()].to_owned()));
            }
            if let Some(start) = body.find("<script type=\"importmap\">") {
                let text = &body[start + 25..];
                let map: Value = serde_json::from_str(&text[..text.find("</script>").unwrap()]).unwrap();
                found.extend(
                    map["imports"]
                        .as_object()
                        .unwrap()
                        .values()
                        .map(|v| v.as_str().unwrap().to_owned()),
                );
            }
        } else if content_type.starts_with("text/javascript") && path.contains("/console/") {
            for marker in ["from '", "from \""] {
                found.extend(
                    body.split(marker)
                        .skip(1)
                        .map(|s| s[..s.find(['\'', '"']).unwrap()].to_owned()),
                );
            }
        } else if content_type.starts_with("text/css") {
            found.extend(body.split("url(").skip(1).map(|s| s[..s.find(')').unwrap()].to_owned()));
        }
        for reference in found {
            let reference = reference.trim_matches(['\'', '"']).to_owned();
            if reference.starts_with("data:") || ["preact", "preact/hooks", "htm"].contains(&reference.as_str()) {
                continue;
            }
            assert!(!reference.contains("//"), "{path} references {reference}");
            let resolved = if reference.starts_with('/') {
                reference
            } else {
                format!("{base}{}", reference.trim_start_matches("./")).replace("/console/pages/../", "/console/")
            };
            queue.push(resolved);
        }
        seen.insert(path, (content_type, body));
    }
    seen
}

async fn served_pages_reference_no_outside_host(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut files = crawl(&server, "/graphql").await;
    files.extend(crawl(&server, "/console").await);
    for expected in [
        "vendor/graphiql.min.js",
        "vendor/graphiql.min.css",
        "vendor/react-dom.production.min.js",
        "graphiql/boot.js",
        "console/app.js",
        "console/pages/license.js",
        "console/pages/usage_chart.js",
        "vendor/preact-hooks.module.js",
        "vendor/htm.module.js",
    ] {
        assert!(
            files.keys().any(|p| p.ends_with(expected)),
            "{expected} not reached: {:?}",
            files.keys()
        );
    }
    for (path, (_, body)) in &files {
        for (at, _) in body.match_indices("://") {
            let scheme_start = body[..at]
                .rfind(|c: char| !c.is_ascii_alphabetic())
                .map_or(0, |i| i + 1);
            let scheme = &body[scheme_start..at];
            if !matches!(scheme, "http" | "https" | "ws" | "wss") {
                continue;
            }
            let host: String = body[at + 3..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                .collect();
            if host.is_empty() {
                continue; // "http://" alone: a scheme test, not a host
            }
            assert!(
                path.contains("/vendor/") && VENDORED_MENTIONS.contains(&host.as_str()),
                "{path} names the outside host {scheme}://{host}"
            );
        }
    }

    // Long-lived caching for the assets, none for the pages; the policy keeps pages at home.
    let asset = files.keys().find(|p| p.ends_with("vendor/graphiql.min.js")).unwrap();
    let res = server
        .http()
        .get(format!("{}{asset}", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    for page in ["/graphql", "/console"] {
        let res = server
            .http()
            .get(format!("{}{page}", server.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["cache-control"], "no-cache");
        let policy = res.headers()["content-security-policy"].to_str().unwrap();
        assert!(
            policy.contains("default-src 'self'") && policy.contains("connect-src 'self'"),
            "{policy}"
        );
    }
    // Another build's path, or a file that is not embedded: 404.
    let other_build = asset.replacen("/assets/", "/assets/0", 1);
    for missing in [
        other_build.as_str(),
        "/assets/x/vendor/graphiql.min.js",
        &asset.replace("graphiql.min.js", "nope.js"),
    ] {
        let res = server
            .http()
            .get(format!("{}{missing}", server.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{missing}");
    }
}

on_both_databases!(
    served_pages_name_no_outside_host,
    served_pages_reference_no_outside_host
);
