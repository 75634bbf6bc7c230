//! Every mutation leaves exactly one audit event naming the actor, the action, the target and
//! a diff of what changed. The test walks every mutation in the schema.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeSet;

use serde_json::{Value, json};
use tests::{Backend, TestServer, on_both_databases, seed};

/// Who calls a mutation, and the actor kind its audit event must name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Who {
    /// The owner API token (`token`).
    Owner,
    /// Nobody: a login, or a license key (`licensee`).
    Anonymous(&'static str),
    /// The staff session `login` opened (`staff`).
    Session,
    /// The device `activateDevice` activated (`device`).
    Device,
}

/// One mutation and the event it must leave.
struct Case {
    field: &'static str,
    query: &'static str,
    vars: Value,
    /// Who calls it.
    who: Who,
    action: &'static str,
    target_kind: &'static str,
    /// Keys the diff must hold with these values; `"<set>"` = any non-null value.
    diff: Value,
}

fn holds(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (a, Value::String(s)) if s == "<set>" => !a.is_null(),
        (Value::Object(a), Value::Object(e)) => e.iter().all(|(k, v)| a.get(k).is_some_and(|av| holds(av, v))),
        (a, e) => a == e,
    }
}

async fn every_mutation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner_token.clone();
    let s = seed(&server, &owner).await;
    let staff_password = "correct horse battery";
    let login = server
        .gql(
            None,
            "mutation { login(email: \"owner@localhost\", password: \"x\") { token } }",
            json!({}),
        )
        .await;
    assert!(login["errors"].is_array(), "the owner has no password yet");
    let token_to_revoke = server
        .ok(
            &owner,
            "mutation { createApiToken(input: {name: \"old\", role: READ_ONLY}) { apiToken { id } } }",
            json!({}),
        )
        .await["createApiToken"]["apiToken"]["id"]
        .clone();
    let owner_user =
        server.ok(&owner, "{ staffUsers { nodes { id } } }", json!({})).await["staffUsers"]["nodes"][0]["id"].clone();
    let rita = server
        .ok(
            &owner,
            "mutation { createStaffUser(input: {email: \"rita@v.test\", role: SUPPORT}) { id } }",
            json!({}),
        )
        .await["createStaffUser"]["id"]
        .clone();
    // A license for the device cases, and a full one whose only seat is taken (which raises an alert).
    let (_, _, device_key) =
        tests::license_with_policy(&server, &owner, "maxActivations: 3, heartbeatIntervalSeconds: 600").await;
    let (_, _, full_key) = tests::license_with_policy(&server, &owner, "maxActivations: 1").await;
    let other_device =
        tests::activate(&server, &full_key, "other", json!([])).await["data"]["activateDevice"]["device"]["id"].clone();
    let (_, _, hybrid_key) =
        tests::license_with_policy(&server, &owner, "maxActivations: 1, deploymentMode: HYBRID").await;
    let offline_request = tests::activation_request(&hybrid_key, 7, "plant", Default::default());
    // A second offline device, and the deactivation file it writes.
    let (_, lab_license, lab_key) = tests::license_with_policy(
        &server,
        &owner,
        "deploymentMode: OFFLINE, meters: [{code: \"calls\", resetPeriod: NEVER}]",
    )
    .await;
    let lab = server
        .ok(
            &owner,
            "mutation($r: String!) { generateOfflineLicense(request: $r) { licenseFile } }",
            json!({ "r": tests::activation_request(&lab_key, 8, "lab", Default::default()) }),
        )
        .await;
    let deactivation = tests::deactivation_file(
        8,
        lab["generateOfflineLicense"]["licenseFile"].as_str().unwrap(),
        &[("calls", 2)],
    );
    // The lab device's usage report, counted once before the walk (the walk imports it again),
    // and a second report that rewrites its record 1: a forked ledger, an anomaly.
    let lab_file = lab["generateOfflineLicense"]["licenseFile"].as_str().unwrap();
    let report = tests::usage_report_file(8, lab_file, &[("calls", 1)]);
    let import_report = "mutation($f: String!) { importUsageReport(file: $f) { acceptedRecords anomalies { id } } }";
    server.ok(&owner, import_report, json!({ "f": report })).await;
    let forked = tests::usage_report_file(8, lab_file, &[("calls", 3)]);
    let anomaly_id = server.ok(&owner, import_report, json!({ "f": forked })).await["importUsageReport"]["anomalies"]
        [0]["id"]
        .clone();
    assert!(anomaly_id.is_string(), "the fork was flagged");
    let alert_id = server
        .ok(&owner, "{ alerts(first: 100) { nodes { id kind } } }", json!({}))
        .await["alerts"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "ACTIVATION_LIMIT_REACHED")
        .unwrap()["id"]
        .clone();
    assert!(alert_id.is_string(), "filling the one seat raised an alert");
    // A webhook endpoint nobody listens at, and the delivery of an event made after it.
    let hook_url = format!("http://127.0.0.1:{}/hooks", tests::free_port());
    let hook = server
        .ok(
            &owner,
            "mutation($u: String!) { createWebhookEndpoint(input: {url: $u, events: [\"license.created\"]}) { endpoint { id } } }",
            json!({ "u": hook_url }),
        )
        .await["createWebhookEndpoint"]["endpoint"]["id"]
        .clone();
    tests::license_with_policy(&server, &owner, "maxActivations: 1").await;
    let delivery = tests::eventually(std::time::Duration::from_secs(60), "a webhook delivery", || async {
        let log = server
            .ok(&owner, "{ webhookDeliveries(first: 1) { nodes { id } } }", json!({}))
            .await;
        let id = log["webhookDeliveries"]["nodes"][0]["id"].clone();
        id.is_string().then_some(id)
    })
    .await;

    let cases = vec![
        Case {
            field: "createProduct",
            query: "mutation { createProduct(input: {name: \"Lite\", code: \"lite\"}) { id } }",
            vars: json!({}),
            who: Who::Owner,
            action: "product.create",
            target_kind: "product",
            diff: json!({ "before": {}, "after": { "name": "Lite", "code": "lite" } }),
        },
        Case {
            field: "createPolicy",
            query: "mutation($p: ID!) { createPolicy(input: {productId: $p, name: \"Monthly\", durationSeconds: 2592000, floating: true}) { id } }",
            vars: json!({ "p": s.product }),
            who: Who::Owner,
            action: "policy.create",
            target_kind: "policy",
            diff: json!({ "before": {}, "after": { "name": "Monthly", "floating": true, "dead_device_action": "RELEASE_SEAT", "grace_seconds": 604800 } }),
        },
        Case {
            field: "upsertCustomer",
            query: "mutation { upsertCustomer(input: {externalId: \"C-9\", name: \"Initech\"}) { id } }",
            vars: json!({}),
            who: Who::Owner,
            action: "customer.create",
            target_kind: "customer",
            diff: json!({ "before": {}, "after": { "external_id": "C-9", "name": "Initech" } }),
        },
        Case {
            field: "upsertCustomer",
            query: "mutation { upsertCustomer(input: {externalId: \"C-1\", name: \"Acme Inc\", email: \"ops@acme.test\"}) { id } }",
            vars: json!({}),
            who: Who::Owner,
            action: "customer.update",
            target_kind: "customer",
            diff: json!({ "before": { "name": "Acme" }, "after": { "name": "Acme Inc" } }),
        },
        Case {
            field: "issueLicense",
            query: "mutation($p: ID!) { issueLicense(input: {policyId: $p, customerExternalId: \"C-9\"}) { id } }",
            vars: json!({ "p": s.policy }),
            who: Who::Owner,
            action: "license.issue",
            target_kind: "license",
            diff: json!({ "before": {}, "after": { "status": "ACTIVE", "version": 1, "max_activations": 5, "expires_at": "<set>" } }),
        },
        Case {
            field: "updateLicense",
            query: "mutation($id: ID!) { updateLicense(input: {id: $id, maxActivations: 8}) { id } }",
            vars: json!({ "id": s.license }),
            who: Who::Owner,
            action: "license.update",
            target_kind: "license",
            diff: json!({ "before": { "max_activations": 5, "version": 1 }, "after": { "max_activations": 8, "version": 2 } }),
        },
        Case {
            field: "renewLicense",
            query: "mutation($id: ID!) { renewLicense(id: $id) { id } }",
            vars: json!({ "id": s.license }),
            who: Who::Owner,
            action: "license.renew",
            target_kind: "license",
            diff: json!({ "before": { "expires_at": "<set>", "version": 2 }, "after": { "expires_at": "<set>", "version": 3 } }),
        },
        Case {
            field: "suspendLicense",
            query: "mutation($id: ID!) { suspendLicense(id: $id, reason: \"late\") { id } }",
            vars: json!({ "id": s.license }),
            who: Who::Owner,
            action: "license.suspend",
            target_kind: "license",
            diff: json!({ "before": { "status": "ACTIVE", "status_reason": null, "version": 3 }, "after": { "status": "SUSPENDED", "status_reason": "late", "version": 4 } }),
        },
        Case {
            field: "reinstateLicense",
            query: "mutation($id: ID!) { reinstateLicense(id: $id) { id } }",
            vars: json!({ "id": s.license }),
            who: Who::Owner,
            action: "license.reinstate",
            target_kind: "license",
            diff: json!({ "before": { "status": "SUSPENDED", "version": 4 }, "after": { "status": "ACTIVE", "status_reason": null, "version": 5 } }),
        },
        Case {
            field: "revokeLicense",
            query: "mutation($id: ID!) { revokeLicense(id: $id) { id } }",
            vars: json!({ "id": s.license }),
            who: Who::Owner,
            action: "license.revoke",
            target_kind: "license",
            diff: json!({ "before": { "status": "ACTIVE", "version": 5 }, "after": { "status": "REVOKED", "version": 6 } }),
        },
        Case {
            field: "updateVendorSettings",
            query: "mutation { updateVendorSettings(input: {alertEmails: [\"ops@v.test\"]}) { id } }",
            vars: json!({}),
            who: Who::Owner,
            action: "vendor.update_settings",
            target_kind: "vendor",
            diff: json!({ "before": { "alert_emails": ["owner@localhost"] }, "after": { "alert_emails": ["ops@v.test"] } }),
        },
        Case {
            field: "rotateSigningKey",
            query: "mutation { rotateSigningKey { kid } }",
            vars: json!({}),
            who: Who::Owner,
            action: "signing_key.rotate",
            target_kind: "signing_key",
            diff: json!({ "before": { "active_kid": "<set>" }, "after": { "active_kid": "<set>" } }),
        },
        Case {
            field: "createApiToken",
            query: "mutation { createApiToken(input: {name: \"ci\", role: SUPPORT}) { token } }",
            vars: json!({}),
            who: Who::Owner,
            action: "api_token.create",
            target_kind: "api_token",
            diff: json!({ "before": {}, "after": { "name": "ci", "role": "SUPPORT" } }),
        },
        Case {
            field: "revokeApiToken",
            query: "mutation($id: ID!) { revokeApiToken(id: $id) { id } }",
            vars: json!({ "id": token_to_revoke }),
            who: Who::Owner,
            action: "api_token.revoke",
            target_kind: "api_token",
            diff: json!({ "before": { "revoked_at": null }, "after": { "revoked_at": "<set>" } }),
        },
        Case {
            field: "createStaffUser",
            query: "mutation { createStaffUser(input: {email: \"sam@v.test\", role: ADMIN}) { id } }",
            vars: json!({}),
            who: Who::Owner,
            action: "staff_user.create",
            target_kind: "staff_user",
            diff: json!({ "before": {}, "after": { "email": "sam@v.test", "role": "ADMIN", "password_set": false } }),
        },
        Case {
            field: "setStaffPassword",
            query: "mutation($id: ID!, $p: String!) { setStaffPassword(userId: $id, password: $p) { id } }",
            vars: json!({ "id": owner_user, "p": staff_password }),
            who: Who::Owner,
            action: "staff_user.set_password",
            target_kind: "staff_user",
            diff: json!({ "before": { "password_set": false }, "after": { "password_set": true } }),
        },
        Case {
            field: "updateStaffUser",
            query: "mutation($id: ID!) { updateStaffUser(id: $id, role: READ_ONLY) { id } }",
            vars: json!({ "id": rita }),
            who: Who::Owner,
            action: "staff_user.update",
            target_kind: "staff_user",
            diff: json!({ "before": { "role": "SUPPORT" }, "after": { "role": "READ_ONLY" } }),
        },
        Case {
            field: "login",
            query: "mutation($p: String!) { login(email: \"owner@localhost\", password: $p) { token } }",
            vars: json!({ "p": staff_password }),
            who: Who::Anonymous("staff"),
            action: "staff.login",
            target_kind: "staff_session",
            diff: json!({ "before": {}, "after": { "staff_user_id": owner_user, "expires_at": "<set>" } }),
        },
        Case {
            field: "logout",
            query: "mutation { logout }",
            vars: json!({}),
            who: Who::Session,
            action: "staff.logout",
            target_kind: "staff_session",
            diff: json!({ "before": { "revoked_at": null }, "after": { "revoked_at": "<set>" } }),
        },
        Case {
            field: "activateDevice",
            query: "mutation($k: String!) { activateDevice(input: {licenseKey: $k, fingerprint: \"fp-1\"}) { deviceToken } }",
            vars: json!({ "k": device_key }),
            who: Who::Anonymous("licensee"),
            action: "device.activate",
            target_kind: "device",
            diff: json!({ "before": {}, "after": { "fingerprint": "fp-1", "status": "ACTIVE", "holds_seat": true } }),
        },
        Case {
            field: "checkOutDevice",
            query: "mutation { checkOutDevice(ttlSeconds: 3600) }",
            vars: json!({}),
            who: Who::Device,
            action: "device.check_out",
            target_kind: "device",
            diff: json!({ "before": { "status": "ACTIVE", "checked_out_until": null }, "after": { "status": "CHECKED_OUT", "checked_out_until": "<set>" } }),
        },
        Case {
            field: "checkInDevice",
            query: "mutation { checkInDevice { id } }",
            vars: json!({}),
            who: Who::Device,
            action: "device.check_in",
            target_kind: "device",
            diff: json!({ "before": { "status": "CHECKED_OUT" }, "after": { "status": "ACTIVE", "checked_out_until": null } }),
        },
        Case {
            field: "deactivateDevice",
            query: "mutation { deactivateDevice { id } }",
            vars: json!({}),
            who: Who::Device,
            action: "device.deactivate",
            target_kind: "device",
            diff: json!({ "before": { "status": "ACTIVE", "holds_seat": true }, "after": { "status": "RELEASED", "holds_seat": false } }),
        },
        Case {
            field: "releaseDevice",
            query: "mutation($id: ID!) { releaseDevice(id: $id) { id } }",
            vars: json!({ "id": other_device }),
            who: Who::Owner,
            action: "device.release",
            target_kind: "device",
            diff: json!({ "before": { "status": "ACTIVE" }, "after": { "status": "RELEASED" } }),
        },
        Case {
            field: "generateOfflineLicense",
            query: "mutation($r: String!) { generateOfflineLicense(request: $r) { licenseFile } }",
            vars: json!({ "r": offline_request }),
            who: Who::Owner,
            action: "device.activate_offline",
            target_kind: "device",
            diff: json!({ "before": {}, "after": { "fingerprint": "plant", "status": "ACTIVE", "holds_seat": true } }),
        },
        Case {
            field: "importUsageReport",
            query: "mutation($f: String!) { importUsageReport(file: $f) { acceptedRecords } }",
            vars: json!({ "f": report }),
            who: Who::Owner,
            action: "usage.import_report",
            target_kind: "device",
            diff: json!({ "after": { "accepted_records": 0, "duplicate_records": 1 } }),
        },
        Case {
            field: "adjustUsage",
            query: "mutation($l: ID!) { adjustUsage(input: {licenseId: $l, meter: \"calls\", delta: 5, reason: \"migrated from the old system\", idempotencyKey: \"migration-1\"}) { used } }",
            vars: json!({ "l": lab_license }),
            who: Who::Owner,
            action: "usage.adjust",
            target_kind: "license",
            diff: json!({ "before": { "used": 1 }, "after": { "meter": "calls", "used": 6, "delta": 5, "reason": "migrated from the old system" } }),
        },
        Case {
            field: "acknowledgeAnomaly",
            query: "mutation($id: ID!) { acknowledgeAnomaly(id: $id, note: \"customer restored a backup\") { id } }",
            vars: json!({ "id": anomaly_id }),
            who: Who::Owner,
            action: "anomaly.acknowledge",
            target_kind: "anomaly",
            diff: json!({ "before": { "status": "OPEN" }, "after": { "status": "ACKNOWLEDGED", "note": "customer restored a backup" } }),
        },
        Case {
            field: "importDeactivation",
            query: "mutation($f: String!) { importDeactivation(file: $f) { acceptedRecords } }",
            vars: json!({ "f": deactivation }),
            who: Who::Owner,
            action: "device.import_deactivation",
            target_kind: "device",
            diff: json!({ "before": { "status": "ACTIVE", "holds_seat": true }, "after": { "status": "RELEASED", "holds_seat": false } }),
        },
        Case {
            field: "syncBilling",
            query: "mutation { syncBilling { id } }",
            vars: json!({}),
            who: Who::Owner,
            action: "billing.sync_request",
            target_kind: "billing_sync_run",
            diff: json!({ "after": { "requested": true } }),
        },
        Case {
            field: "acknowledgeAlert",
            query: "mutation($id: ID!) { acknowledgeAlert(id: $id) { id } }",
            vars: json!({ "id": alert_id }),
            who: Who::Owner,
            action: "alert.acknowledge",
            target_kind: "alert",
            diff: json!({ "before": { "acknowledged_at": null }, "after": { "acknowledged_at": "<set>" } }),
        },
        Case {
            field: "createWebhookEndpoint",
            query: "mutation { createWebhookEndpoint(input: {url: \"https://erp.example.com/hooks\", events: [\"license.*\"]}) { secret } }",
            vars: json!({}),
            who: Who::Owner,
            action: "webhook_endpoint.create",
            target_kind: "webhook_endpoint",
            diff: json!({ "before": {}, "after": { "url": "https://erp.example.com/hooks", "events": ["license.*"], "enabled": true } }),
        },
        Case {
            field: "redeliverWebhook",
            query: "mutation($id: ID!) { redeliverWebhook(deliveryId: $id) { id } }",
            vars: json!({ "id": delivery }),
            who: Who::Owner,
            action: "webhook.redeliver",
            target_kind: "webhook_delivery",
            diff: json!({ "before": {}, "after": { "endpoint_id": hook, "event_id": "<set>" } }),
        },
        Case {
            field: "updateWebhookEndpoint",
            query: "mutation($id: ID!) { updateWebhookEndpoint(id: $id, enabled: false) { id } }",
            vars: json!({ "id": hook }),
            who: Who::Owner,
            action: "webhook_endpoint.update",
            target_kind: "webhook_endpoint",
            diff: json!({ "before": { "enabled": true }, "after": { "enabled": false } }),
        },
        Case {
            field: "deleteWebhookEndpoint",
            query: "mutation($id: ID!) { deleteWebhookEndpoint(id: $id) { id } }",
            vars: json!({ "id": hook }),
            who: Who::Owner,
            action: "webhook_endpoint.delete",
            target_kind: "webhook_endpoint",
            diff: json!({ "before": { "url": hook_url, "enabled": false }, "after": {} }),
        },
    ];

    let (mut session, mut device) = (None, None);
    for case in &cases {
        let before = server.audit_count(&owner).await;
        let token = match case.who {
            Who::Owner => Some(owner.clone()),
            Who::Anonymous(_) => None,
            Who::Session => session.clone(),
            Who::Device => device.clone(),
        };
        let res = server.gql(token.as_deref(), case.query, case.vars.clone()).await;
        assert!(res.get("errors").is_none(), "{}: {res}", case.field);
        match case.field {
            "login" => session = Some(res["data"]["login"]["token"].as_str().unwrap().to_owned()),
            "activateDevice" => {
                device = Some(
                    res["data"]["activateDevice"]["deviceToken"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                )
            }
            _ => {}
        }
        assert_eq!(
            server.audit_count(&owner).await,
            before + 1,
            "{}: exactly one audit event",
            case.field
        );
        let event = server
            .ok(&owner, "{ auditEvents(first: 1) { nodes { action actorKind actorId actorLabel targetKind targetId diff requestId } } }", json!({}))
            .await["auditEvents"]["nodes"][0]
            .clone();
        assert_eq!(event["action"], case.action, "{event}");
        assert_eq!(event["targetKind"], case.target_kind, "{event}");
        assert!(
            event["targetId"].is_string() && event["requestId"].is_string(),
            "{event}"
        );
        let actor_kind = match case.who {
            Who::Owner => "token",
            Who::Anonymous(kind) => kind,
            Who::Session => "staff",
            Who::Device => "device",
        };
        assert_eq!(event["actorKind"], actor_kind, "{event}");
        if actor_kind == "staff" {
            assert_eq!(event["actorId"], owner_user);
            assert_eq!(event["actorLabel"], "owner@localhost");
        }
        assert!(
            holds(&event["diff"], &case.diff),
            "{}: diff {} does not hold {}",
            case.field,
            event["diff"],
            case.diff
        );
        let text = event.to_string();
        assert!(
            !text.contains(&s.key)
                && !text.contains(staff_password)
                && !text.contains("lsk_")
                && !text.contains("ldt_"),
            "no secrets in the audit log: {text}"
        );
    }

    // Calls that change no business state leave no event: validation reads, a heartbeat
    // records soft state (last seen), fetching or exporting a file re-signs what the license
    // already says.
    let device_token = server
        .gql(
            None,
            "mutation($k: String!) { activateDevice(input: {licenseKey: $k, fingerprint: \"fp-2\"}) { deviceToken } }",
            json!({ "k": device_key }),
        )
        .await["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = server.audit_count(&owner).await;
    server
        .ok(&device_token, "mutation { heartbeat { licenseVersion } }", json!({}))
        .await;
    server
        .ok(&device_token, "mutation { fetchLicenseFile }", json!({}))
        .await;
    let res = server
        .gql(
            None,
            "mutation($k: String!) { validateLicense(input: {licenseKey: $k}) { code } }",
            json!({ "k": device_key }),
        )
        .await;
    assert_eq!(res["data"]["validateLicense"]["code"], "VALID");
    assert_eq!(server.audit_count(&owner).await, before);
    let device_id = server
        .ok(
            &owner,
            "{ devices(first: 1, filter: {status: ACTIVE}) { nodes { id } } }",
            json!({}),
        )
        .await["devices"]["nodes"][0]["id"]
        .clone();
    server
        .ok(
            &owner,
            "mutation($d: ID!) { exportLicenseFile(deviceId: $d) }",
            json!({ "d": device_id }),
        )
        .await;
    assert_eq!(server.audit_count(&owner).await, before);
    // Usage a device records online is its own append-only log (`usage_records`: device,
    // source, recordedAt, receivedAt), not an audit event per unit of work.
    let unaudited = [
        "heartbeat",
        "fetchLicenseFile",
        "validateLicense",
        "exportLicenseFile",
        "recordUsage",
        // Hands out a stateless nonce: nothing is written.
        "deviceKeyChallenge",
    ];

    // Every mutation of the schema was walked above.
    let schema = server
        .ok(&owner, "{ __schema { mutationType { fields { name } } } }", json!({}))
        .await;
    let all: BTreeSet<&str> = schema["__schema"]["mutationType"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let walked: BTreeSet<&str> = cases.iter().map(|c| c.field).chain(unaudited).collect();
    let missing: Vec<&&str> = all.difference(&walked).collect();
    assert!(missing.is_empty(), "mutations without an audit case: {missing:?}");

    // Filters by target and by actor.
    let by_target = server
        .ok(
            &owner,
            "query($t: ID) { auditEvents(targetId: $t) { totalCount } }",
            json!({ "t": s.license }),
        )
        .await;
    assert_eq!(
        by_target["auditEvents"]["totalCount"], 6,
        "issue, update, renew, suspend, reinstate, revoke"
    );
    let by_actor = server
        .ok(
            &owner,
            "query($a: ID) { auditEvents(actorId: $a) { totalCount } }",
            json!({ "a": owner_user }),
        )
        .await;
    assert_eq!(by_actor["auditEvents"]["totalCount"], 2, "login and logout");
}
on_both_databases!(every_mutation_leaves_one_audit_event, every_mutation);
