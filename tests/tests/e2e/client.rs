//! PRODUCT.md scenarios 2, 3, 4, 6 and 7 through the real `licensing-client` binary and the
//! real `licensing-api`: offline activation by files, refresh files, offline deactivation
//! with cached usage, grace and clock tamper, check-out; and every bad file refused without a
//! change of state.

#![expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]

use std::os::unix::fs::PermissionsExt as _;

use serde_json::{Value, json};
use tests::{Backend, ClientMachine, TestServer, active_devices, error_code, license_with_policy, on_both_databases};

const PORTAL: &str = "mutation($r: String!) { generateOfflineLicense(request: $r) { licenseFile device { id } } }";
const IMPORT: &str = "mutation($f: String!) { importDeactivation(file: $f) { acceptedRecords duplicateRecords anomalies { kind } device { id status holdsSeat } } }";
const MACHINE_A: &str = "machine-id=m-a,mac=aa:aa,cpu=Xeon,disk=disk-a";
const DAY: i64 = 86_400;

/// `request` on the machine, through the offline portal, the license file written next to
/// it; returns (device id, path of the license file).
pub(crate) async fn offline_activation(
    server: &TestServer,
    token: &str,
    machine: &ClientMachine,
    key: &str,
) -> (String, String) {
    let request = machine.file("request.txt");
    machine.ok(&["request", "--key", key, "--out", request.to_str().unwrap()]);
    let text = std::fs::read_to_string(&request).unwrap();
    assert!(text.starts_with("-----BEGIN ACTIVATION REQUEST-----"), "{text}");
    let res = server.ok(token, PORTAL, json!({ "r": text })).await;
    let file = machine.file("license.txt");
    std::fs::write(&file, res["generateOfflineLicense"]["licenseFile"].as_str().unwrap()).unwrap();
    (
        res["generateOfflineLicense"]["device"]["id"]
            .as_str()
            .unwrap()
            .to_owned(),
        file.to_str().unwrap().to_owned(),
    )
}

/// The same license file with its payload edited (version 99) and the signature kept: it
/// parses, but does not verify.
fn forged(text: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let json = protocol::armour::decode("LICENSE FILE", text).unwrap();
    let mut envelope: Value = serde_json::from_slice(&json).unwrap();
    let mut payload: Value =
        serde_json::from_slice(&b64.decode(envelope["payload"].as_str().unwrap()).unwrap()).unwrap();
    payload["version"] = json!(99);
    envelope["payload"] = json!(b64.encode(serde_json::to_vec(&payload).unwrap()));
    protocol::armour::encode("LICENSE FILE", &serde_json::to_vec(&envelope).unwrap())
}

fn state_snapshot(machine: &ClientMachine) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(machine.state())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != "clock.json")
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Installing `text` is refused with a message containing `why`, and changes nothing.
fn refused(machine: &ClientMachine, name: &str, text: &str, why: &str) {
    let before = state_snapshot(machine);
    let path = machine.file(name);
    std::fs::write(&path, text).unwrap();
    let run = machine.run(&["install", path.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{name} must be refused: {run:?}");
    assert!(run.stderr.contains(why), "{name}: {:?} should say {why:?}", run.stderr);
    assert_eq!(state_snapshot(machine), before, "{name}: nothing changed");
}

/// Scenario 2: request -> offline portal -> install -> valid with no server; the fingerprint
/// rule (1 of 4 swapped tolerated with minComponentMatches 3, 2 not); bad files refused.
async fn scenario_2_air_gapped(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, license, key) = license_with_policy(
        &server,
        &token,
        "maxActivations: 2, deploymentMode: OFFLINE, minComponentMatches: 3, entitlements: [\"pro\"]",
    )
    .await;
    let mut machine = ClientMachine::new(&server, &token, MACHINE_A).await;
    assert_eq!(machine.status()["code"], "NOT_ACTIVATED");
    let (device_id, file) = offline_activation(&server, &token, &machine, &key).await;
    assert_eq!(active_devices(&server, &license).await, 1);

    // Bad files are refused and change nothing (checked before the real one is installed,
    // and again after).
    let good = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
    let flipped = if lines[1].starts_with('A') { "B" } else { "A" };
    lines[1].replace_range(0..1, flipped);
    let tampered = lines.join("\n");
    refused(&machine, "tampered.lic", &tampered, "not installed");
    refused(&machine, "forged.lic", &forged(&good), "signature does not verify");
    refused(&machine, "truncated.lic", &good[..good.len() / 2], "not installed");
    refused(
        &machine,
        "not-base64.lic",
        "-----BEGIN LICENSE FILE-----\n!!!!\n-----END LICENSE FILE-----\n",
        "not installed",
    );
    // Another vendor's license file, and one bound to another machine of this license.
    let (_, b_token) = server.create_vendor("Other", "other", "owner@other.test");
    let (_, _, b_key) = license_with_policy(&server, &b_token, "deploymentMode: OFFLINE").await;
    let b_machine = ClientMachine::new(&server, &b_token, MACHINE_A).await;
    let (_, b_file) = offline_activation(&server, &b_token, &b_machine, &b_key).await;
    refused(
        &machine,
        "other-vendor.lic",
        &std::fs::read_to_string(b_file).unwrap(),
        "unknown key",
    );
    let machine_b = ClientMachine::new(&server, &token, "machine-id=m-b,mac=bb:bb,cpu=Epyc,disk=disk-b").await;
    let (_, file_b) = offline_activation(&server, &token, &machine_b, &key).await;
    refused(
        &machine,
        "other-device.lic",
        &std::fs::read_to_string(file_b).unwrap(),
        "another machine",
    );
    assert_eq!(machine.status()["code"], "NOT_ACTIVATED");

    machine.ok(&["install", &file]);
    // The state directory is private.
    let mode = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(machine.state()), 0o700);
    for entry in std::fs::read_dir(machine.state()).unwrap().flatten() {
        assert_eq!(mode(entry.path()), 0o600, "{:?}", entry.file_name());
    }
    refused(&machine, "tampered-after.lic", &tampered, "not installed");

    // No server from here on.
    server.stop();
    let status = machine.status();
    assert_eq!(status["valid"], true, "{status}");
    assert_eq!(status["code"], "VALID");
    assert_eq!(status["device_id"], device_id);
    assert_eq!(status["license_id"], license);
    assert_eq!(status["expires_at"], Value::Null, "perpetual");
    assert_eq!(machine.run(&["status", "--entitlement", "pro"]).code, 0);
    let missing = machine.run(&["status", "--json", "--entitlement", "sso"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stdout.contains("ENTITLEMENT_MISSING"), "{missing:?}");

    // A license.lic edited in place is not trusted.
    let installed = machine.state().join("license.lic");
    let original = std::fs::read_to_string(&installed).unwrap();
    std::fs::write(&installed, forged(&original)).unwrap();
    let status = machine.status();
    assert_eq!(status["code"], "INVALID_FILE", "{status}");
    std::fs::write(&installed, original).unwrap();

    // The same state on other hardware: one component of four swapped passes, two do not.
    machine.components = "machine-id=m-a,mac=aa:aa,cpu=Xeon,disk=NEW".into();
    let status = machine.status();
    assert_eq!(status["code"], "VALID", "{status}");
    machine.components = "machine-id=m-a,mac=NEW,cpu=Xeon,disk=NEW".into();
    let status = machine.status();
    assert_eq!(status["code"], "FINGERPRINT_MISMATCH", "{status}");
    assert!(status["detail"].as_str().unwrap().contains("disk"), "{status}");
}
on_both_databases!(scenario_2_request_install_validate_offline, scenario_2_air_gapped);

/// Scenario 3, offline: the vendor extends the license, exports the refresh file, the client
/// installs it and shows the new expiry; the old file is refused afterwards.
async fn scenario_3_offline_refresh(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, license, key) = license_with_policy(
        &server,
        &token,
        "durationSeconds: 604800, trial: true, maxActivations: 1, deploymentMode: HYBRID",
    )
    .await;
    let machine = ClientMachine::new(&server, &token, MACHINE_A).await;
    let (device_id, old_file) = offline_activation(&server, &token, &machine, &key).await;
    machine.ok(&["install", &old_file]);
    let before = machine.status();
    assert_eq!(before["version"], 1);

    let new_expiry = "2031-01-01T00:00:00Z";
    server
        .ok(
            &token,
            "mutation($id: ID!, $e: DateTime) { updateLicense(input: {id: $id, expiresAt: $e}) { version } }",
            json!({ "id": license, "e": new_expiry }),
        )
        .await;
    let refresh = server
        .ok(
            &token,
            "mutation($d: ID!) { exportLicenseFile(deviceId: $d) }",
            json!({ "d": device_id }),
        )
        .await["exportLicenseFile"]
        .as_str()
        .unwrap()
        .to_owned();
    let refresh_path = machine.file("refresh.lic");
    std::fs::write(&refresh_path, refresh).unwrap();
    machine.ok(&["install", refresh_path.to_str().unwrap()]);
    let after = machine.status();
    assert_eq!(after["valid"], true, "{after}");
    assert_eq!(after["version"], 2);
    assert_eq!(
        after["expires_at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap(),
        new_expiry.parse::<chrono::DateTime<chrono::Utc>>().unwrap()
    );
    refused(
        &machine,
        "old-again.lic",
        &std::fs::read_to_string(&old_file).unwrap(),
        "older than the installed one",
    );
    assert_eq!(machine.status()["version"], 2);
}
on_both_databases!(
    scenario_3_refresh_file_moves_expiry_and_never_back,
    scenario_3_offline_refresh
);

/// Scenario 4: a deactivation file with cached usage frees the seat (another machine takes
/// it) and adds the usage once; importing it again adds nothing; bad files change nothing.
async fn scenario_4_offline_deactivation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, license, key) = license_with_policy(
        &server,
        &token,
        "maxActivations: 1, deploymentMode: OFFLINE, meters: [{code: \"scans\", limit: 100, resetPeriod: NEVER}]",
    )
    .await;
    let machine = ClientMachine::new(&server, &token, MACHINE_A).await;
    let (device_id, file) = offline_activation(&server, &token, &machine, &key).await;
    machine.ok(&["install", &file]);
    machine.ok(&["use", "scans", "5"]);
    machine.ok(&["use", "scans", "7"]);
    let unknown = machine.run(&["use", "prints", "1"]);
    assert_eq!(unknown.code, 2);
    assert!(unknown.stderr.contains("no meter \"prints\""), "{unknown:?}");
    // Online deactivation would lose the two records: refused.
    let online = machine.run(&["deactivate"]);
    assert_eq!(online.code, 2);
    assert!(online.stderr.contains("--out"), "{online:?}");

    let out = machine.file("deactivation.txt");
    machine.ok(&["deactivate", "--out", out.to_str().unwrap()]);
    let status = machine.status();
    assert_eq!(status["code"], "NOT_ACTIVATED");
    assert!(
        status["detail"].as_str().unwrap().contains("gave its seat back"),
        "{status}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("-----BEGIN DEACTIVATION FILE-----"));
    // The file of the activation given back cannot bring it back.
    refused(
        &machine,
        "revive.lic",
        &std::fs::read_to_string(&file).unwrap(),
        "gave its seat back",
    );
    assert_eq!(machine.status()["code"], "NOT_ACTIVATED");

    let usage = || async {
        server
            .ok(
                &token,
                "query($id: ID) { license(id: $id) { activeDevices usage { meter used limit remaining } } }",
                json!({ "id": license }),
            )
            .await["license"]
            .clone()
    };
    let audit_total = || async {
        server
            .ok(&token, "{ auditEvents(first: 1) { totalCount } }", json!({}))
            .await["auditEvents"]["totalCount"]
            .as_i64()
            .unwrap()
    };

    // Bad files first: nothing changes.
    let before = usage().await;
    let events = audit_total().await;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let flipped = if lines[2].starts_with('A') { "B" } else { "A" };
    lines[2].replace_range(0..1, flipped);
    for bad in [
        lines.join("\n"),
        text[..text.len() / 2].to_owned(),
        "-----BEGIN DEACTIVATION FILE-----\n%%%\n-----END DEACTIVATION FILE-----".to_owned(),
        std::fs::read_to_string(&file).unwrap(),
        // Names this device but signed by another device's key.
        tests::deactivation_file(99, &std::fs::read_to_string(&file).unwrap(), &[("scans", 1)]),
    ] {
        let res = server.gql(Some(&token), IMPORT, json!({ "f": bad })).await;
        assert_eq!(error_code(&res), Some("INVALID_FILE"), "{res}");
    }
    assert_eq!(usage().await, before);
    assert_eq!(before["activeDevices"], 1);
    assert_eq!(audit_total().await, events);

    let receipt = server.ok(&token, IMPORT, json!({ "f": text })).await["importDeactivation"].clone();
    assert_eq!(receipt["acceptedRecords"], 2, "{receipt}");
    assert_eq!(receipt["duplicateRecords"], 0);
    assert_eq!(receipt["anomalies"], json!([]));
    assert_eq!(
        receipt["device"],
        json!({ "id": device_id, "status": "RELEASED", "holdsSeat": false })
    );
    let after = usage().await;
    assert_eq!(after["activeDevices"], 0);
    assert_eq!(
        after["usage"],
        json!([{ "meter": "scans", "used": 12, "limit": 100, "remaining": 88 }])
    );

    // The seat is free: another machine takes it.
    let other = ClientMachine::new(&server, &token, "machine-id=m-b,mac=bb:bb,cpu=Epyc,disk=disk-b").await;
    let (_, other_file) = offline_activation(&server, &token, &other, &key).await;
    other.ok(&["install", &other_file]);
    assert_eq!(other.status()["valid"], true);

    // The same file again adds nothing, and says so.
    let events = audit_total().await;
    let again = server.ok(&token, IMPORT, json!({ "f": text })).await["importDeactivation"].clone();
    assert_eq!(again["acceptedRecords"], 0, "{again}");
    assert_eq!(again["duplicateRecords"], 2);
    assert_eq!(usage().await["usage"][0]["used"], 12);
    assert_eq!(
        active_devices(&server, &license).await,
        1,
        "the new machine keeps its seat"
    );
    assert_eq!(audit_total().await, events);
}
on_both_databases!(
    scenario_4_deactivation_file_counts_usage_once,
    scenario_4_offline_deactivation
);

/// Scenario 6 (and 3 online): a heartbeat device picks up a renewal at its next heartbeat;
/// offline past `refresh_by` it stays valid through the grace period, then stops and says
/// why; a clock moved back is CLOCK_TAMPER.
async fn scenario_6_grace(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, license, key) = license_with_policy(
        &server,
        &token,
        "durationSeconds: 31536000, maxActivations: 5, heartbeatIntervalSeconds: 3600, licenseFileTtlSeconds: 86400",
    )
    .await;
    let machine = ClientMachine::new(&server, &token, MACHINE_A).await;
    machine.ok(&["activate", "--server", &server.base_url, "--key", &key]);
    assert_eq!(active_devices(&server, &license).await, 1);
    let first = machine.status();
    assert_eq!(first["valid"], true, "{first}");
    let beat = machine.ok(&["heartbeat"]);
    assert!(!beat.contains("new license file"), "{beat}");

    // Scenario 3 online: a renewal reaches the device at its next heartbeat.
    server
        .ok(
            &token,
            "mutation($id: ID!) { renewLicense(id: $id) { version } }",
            json!({ "id": license }),
        )
        .await;
    let beat = machine.ok(&["heartbeat"]);
    assert!(beat.contains("new license file installed"), "{beat}");
    let renewed = machine.status();
    assert_eq!(renewed["version"], 2);
    assert!(renewed["expires_at"].as_str().unwrap() > first["expires_at"].as_str().unwrap());

    // The server goes away.
    server.stop();
    let mut machine = machine;
    let unreachable = machine.run(&["heartbeat"]);
    assert_eq!(unreachable.code, 2);
    assert!(unreachable.stderr.contains("could not reach"), "{unreachable:?}");
    machine.clock_offset = 2 * DAY;
    let grace = machine.status();
    assert_eq!(grace["valid"], true, "{grace}");
    assert_eq!(grace["in_grace"], true);
    assert!(grace["detail"].as_str().unwrap().contains("grace period"), "{grace}");
    machine.clock_offset = 9 * DAY;
    let over = machine.status();
    assert_eq!(over["valid"], false);
    assert_eq!(over["code"], "HEARTBEAT_DEAD");
    assert!(
        over["detail"].as_str().unwrap().contains("grace period is over"),
        "{over}"
    );
    // Back to a day after activation: earlier than the newest time this machine saw.
    machine.clock_offset = DAY;
    let tamper = machine.status();
    assert_eq!(tamper["code"], "CLOCK_TAMPER", "{tamper}");
    assert!(
        tamper["detail"].as_str().unwrap().contains("set the clock right"),
        "{tamper}"
    );
    // A clock earlier than the server's signature on a fresh installation is tampering too.
    let mut fresh = machine.sibling(MACHINE_A);
    std::fs::create_dir_all(fresh.state()).unwrap();
    std::fs::copy(machine.state().join("license.lic"), fresh.state().join("license.lic")).unwrap();
    fresh.clock_offset = -DAY;
    assert_eq!(fresh.status()["code"], "CLOCK_TAMPER");
}
on_both_databases!(scenario_6_grace_then_stop_and_clock_tamper, scenario_6_grace);

/// Scenario 7 through the client: check out, use off the network until the check-out ends;
/// check-in returns it early.
async fn scenario_7_check_out(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, _, key) = license_with_policy(
        &server,
        &token,
        "maxActivations: 2, floating: true, heartbeatIntervalSeconds: 600, deploymentMode: HYBRID",
    )
    .await;
    let machine = ClientMachine::new(&server, &token, MACHINE_A).await;
    machine.ok(&["activate", "--server", &server.base_url, "--key", &key]);
    let out = machine.ok(&["check-out", "--ttl", "7200"]);
    assert!(out.starts_with("Valid"), "{out}");
    assert!(machine.status()["checked_out_until"].is_string());
    machine.ok(&["check-in"]);
    assert_eq!(machine.status()["checked_out_until"], Value::Null);

    machine.ok(&["check-out", "--ttl", "7200"]);
    server.stop();
    let mut machine = machine;
    machine.clock_offset = 3600;
    assert_eq!(machine.status()["valid"], true);
    machine.clock_offset = 3 * 3600;
    let ended = machine.status();
    assert_eq!(ended["code"], "HEARTBEAT_DEAD", "{ended}");
    assert!(ended["detail"].as_str().unwrap().contains("check-out ended"), "{ended}");
}
on_both_databases!(scenario_7_check_out_through_the_client, scenario_7_check_out);

/// Two deactivation files with overlapping records (the machine activated again before the
/// first was imported): whatever the order, each record counts once, and the older file is
/// reported as duplicates, not as a restored ledger.
async fn overlapping_deactivations(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, license, key) = license_with_policy(
        &server,
        &token,
        "maxActivations: 1, deploymentMode: OFFLINE, meters: [{code: \"scans\", resetPeriod: NEVER}]",
    )
    .await;
    let machine = ClientMachine::new(&server, &token, MACHINE_A).await;
    let (_, file) = offline_activation(&server, &token, &machine, &key).await;
    machine.ok(&["install", &file]);
    machine.ok(&["use", "scans", "2"]);
    machine.ok(&["use", "scans", "3"]);
    let first = machine.file("first.txt");
    machine.ok(&["deactivate", "--out", first.to_str().unwrap()]);
    // Activated again (the seat is still held: the first file was not imported yet).
    let (_, again) = offline_activation(&server, &token, &machine, &key).await;
    machine.ok(&["install", &again]);
    machine.ok(&["use", "scans", "4"]);
    let second = machine.file("second.txt");
    machine.ok(&["deactivate", "--out", second.to_str().unwrap()]);

    // The first file belongs to the earlier activation: it cannot release the current one.
    let stale = server
        .gql(
            Some(&token),
            IMPORT,
            json!({ "f": std::fs::read_to_string(&first).unwrap() }),
        )
        .await;
    assert_eq!(error_code(&stale), Some("INVALID_FILE"), "{stale}");
    assert_eq!(active_devices(&server, &license).await, 1);
    let receipt = server
        .ok(
            &token,
            IMPORT,
            json!({ "f": std::fs::read_to_string(&second).unwrap() }),
        )
        .await["importDeactivation"]
        .clone();
    assert_eq!(receipt["acceptedRecords"], 3, "{receipt}");
    assert_eq!(active_devices(&server, &license).await, 0);
    // Now the first file's records are all counted already: duplicates, no anomaly.
    let late = server
        .ok(&token, IMPORT, json!({ "f": std::fs::read_to_string(&first).unwrap() }))
        .await["importDeactivation"]
        .clone();
    assert_eq!(late["acceptedRecords"], 0, "{late}");
    assert_eq!(late["duplicateRecords"], 2);
    assert_eq!(late["anomalies"], json!([]));
    let used = server
        .ok(
            &token,
            "query($id: ID) { license(id: $id) { usage { used } } }",
            json!({ "id": license }),
        )
        .await;
    assert_eq!(used["license"]["usage"][0]["used"], 9, "{used}");
}
on_both_databases!(
    overlapping_deactivation_files_count_each_record_once,
    overlapping_deactivations
);
