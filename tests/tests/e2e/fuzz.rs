//! GraphQL fuzzing with schemathesis (installed by `scripts/test.sh` into a venv named by
//! `LICENSING_TEST_SCHEMATHESIS`): it reads the schema by introspection and sends generated
//! documents for every query and mutation, as the owner, anonymously (the device-facing
//! mutations) and with a device token (the device calls). Its arguments draw on real ids and a
//! real license key some of the time, so generated calls reach the use cases and not only the
//! "not found" answers. Every answer must be below 500 and carry only allow-listed error codes,
//! never INTERNAL (`tests/support/graphql_fuzz_checks.py`); afterwards the service is healthy
//! and its seats add up.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use tests::{ACTIVATE, Backend, TestServer, components, license_with_policy, on_both_databases};

/// Generated cases per operation (bounded, so a run takes about a minute per database).
const MAX_EXAMPLES: &str = "12";

/// The `schemathesis` executable: `LICENSING_TEST_SCHEMATHESIS`, else where `scripts/test.sh`
/// installs it.
fn schemathesis() -> PathBuf {
    tests::test_tool(
        "LICENSING_TEST_SCHEMATHESIS",
        "licensing-tests/schemathesis/bin/schemathesis",
    )
}

/// `schemathesis.toml`: dictionaries of real values, drawn for id and key arguments half the time.
fn config(ids: &[&str], key: &str) -> String {
    let list = |values: &[&str]| serde_json::to_string(values).unwrap();
    let mut toml = format!(
        "[dictionaries.ids]\nvalues = {}\n[dictionaries.keys]\nvalues = {}\n[dictionaries.meters]\nvalues = [\"calls\"]\n[parameters]\n",
        list(ids),
        list(&[key])
    );
    for argument in ["id", "deviceId", "licenseId", "productId", "policyId", "customerId"] {
        toml.push_str(&format!(
            "\"*.*.{argument}\" = {{ dictionary = \"ids\", probability = 0.5 }}\n\"*.*.input.{argument}\" = {{ dictionary = \"ids\", probability = 0.5 }}\n"
        ));
    }
    toml.push_str("\"*.*.input.licenseKey\" = { dictionary = \"keys\", probability = 0.5 }\n");
    toml.push_str("\"*.*.input.meter\" = { dictionary = \"meters\", probability = 0.5 }\n");
    toml
}

/// Runs schemathesis against the server's `/graphql` with `token`, on the operations whose
/// name matches `operations` (a regex over `Query.x` / `Mutation.x`); panics with its report
/// when a check fails.
fn fuzz(server: &TestServer, dir: &Path, token: Option<&str>, operations: &str) {
    let checks = Path::new(env!("CARGO_MANIFEST_DIR")).join("support");
    let mut command = Command::new(schemathesis());
    command
        .current_dir(dir)
        .env("SCHEMATHESIS_HOOKS", "graphql_fuzz_checks")
        .env("PYTHONPATH", &checks)
        .args(["--config-file", "schemathesis.toml", "--no-color", "run"])
        .arg(format!("{}/graphql", server.base_url))
        .args(["--checks", "no_5xx,no_internal_error"])
        .args(["--max-examples", MAX_EXAMPLES, "--workers", "1", "--seed", "1"])
        .args([
            "--generation-database",
            "none",
            "--continue-on-failure",
            "--request-timeout",
            "20",
        ])
        .args(["--include-name-regex", operations]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("run {} (scripts/test.sh installs it): {e}", schemathesis().display()));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found failures ({operations}):\n{report}"
    );
    assert!(
        report.contains(" passed"),
        "schemathesis ran no case ({operations}):\n{report}"
    );
}

async fn graphql_fuzz(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner_token.clone();
    let (policy, license, key) = license_with_policy(
        &server,
        &owner,
        "maxActivations: 50, heartbeatIntervalSeconds: 600, durationSeconds: 2592000, meters: [{code: \"calls\", limit: 100000}]",
    )
    .await;
    let activated = server
        .gql(
            None,
            ACTIVATE,
            json!({ "in": { "licenseKey": key, "fingerprint": "fuzz-device", "components": components("fuzz") } }),
        )
        .await;
    let device = activated["data"]["activateDevice"]["device"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let device_token = activated["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let product = server
        .ok(
            &owner,
            "query($id: ID) { license(id: $id) { product { id } } }",
            json!({ "id": license }),
        )
        .await["license"]["product"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("schemathesis.toml"),
        config(&[&product, &policy, &license, &device], &key),
    )
    .unwrap();
    // The device calls first (the staff run may revoke the license they use).
    fuzz(
        &server,
        dir.path(),
        Some(&device_token),
        "^Mutation\\.(heartbeat|fetchLicenseFile|checkOutDevice|checkInDevice|recordUsage|deactivateDevice)$",
    );
    fuzz(
        &server,
        dir.path(),
        None,
        "^Mutation\\.(activateDevice|validateLicense|login|generateOfflineLicense|importUsageReport|importDeactivation)$",
    );
    fuzz(&server, dir.path(), Some(&owner), "^(Query|Mutation)\\.");

    // Still healthy, and the seats add up on every license.
    let ready = server
        .http()
        .get(format!("{}/readyz", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let licenses = server
        .ok(
            &owner,
            "{ licenses(first: 100) { nodes { id activeDevices } } }",
            json!({}),
        )
        .await;
    for license in licenses["licenses"]["nodes"].as_array().unwrap() {
        let devices = server
            .ok(
                &owner,
                "query($l: ID) { devices(first: 100, filter: {licenseId: $l}) { nodes { holdsSeat } } }",
                json!({ "l": license["id"] }),
            )
            .await;
        let holding = devices["devices"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["holdsSeat"] == Value::Bool(true))
            .count();
        assert_eq!(license["activeDevices"], json!(holding), "{license}");
    }
}

on_both_databases!(graphql_fuzz_run, graphql_fuzz);
