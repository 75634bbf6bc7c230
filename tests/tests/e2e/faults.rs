//! Faults mid-flight: the API killed with SIGKILL in the middle of 200 concurrent activations
//! loses nothing and invents nothing — after the restart every license's seat count equals
//! the devices holding a seat, every answered activation is among them, and retrying the
//! unanswered ones fills each license exactly to its limit.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tests::{ACTIVATE, Backend, TestServer, components, error_code, license_with_policy, on_both_databases};

/// Licenses raced for (few enough activations per key to stay inside its activation budget).
const LICENSES: usize = 10;
/// Devices racing for each license.
const DEVICES_PER_LICENSE: usize = 20;
/// Seats per license: fewer than the devices, so the race for the last seat is part of it.
const SEATS: usize = 15;

/// What one activation got back.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Activated: the device id.
    Activated(String),
    /// Refused with this code.
    Refused(String),
    /// No answer (the server died first).
    Unanswered,
}

async fn activate_once(http: &reqwest::Client, url: &str, key: &str, fingerprint: &str) -> Outcome {
    let body = json!({ "query": ACTIVATE, "variables": { "in": {
        "licenseKey": key, "fingerprint": fingerprint, "components": components(fingerprint),
    } } });
    let Ok(res) = http.post(url).json(&body).send().await else {
        return Outcome::Unanswered;
    };
    let Ok(res) = res.json::<Value>().await else {
        return Outcome::Unanswered;
    };
    match res["data"]["activateDevice"]["device"]["id"].as_str() {
        Some(id) => Outcome::Activated(id.to_owned()),
        None => Outcome::Refused(error_code(&res).unwrap_or("?").to_owned()),
    }
}

/// `(activeDevices, ids of the devices holding a seat)` of a license.
async fn seats(server: &TestServer, license: &str) -> (i64, BTreeSet<String>) {
    let data = server
        .ok(
            &server.owner_token,
            "query($l: ID, $id: ID) { license(id: $id) { activeDevices } devices(first: 100, filter: {licenseId: $l}) { nodes { id holdsSeat } } }",
            json!({ "l": license, "id": license }),
        )
        .await;
    let holding = data["devices"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["holdsSeat"] == Value::Bool(true))
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    (data["license"]["activeDevices"].as_i64().unwrap(), holding)
}

async fn sigkill_mid_activations(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let owner = server.owner_token.clone();
    let mut licenses = Vec::new();
    for _ in 0..LICENSES {
        let (_, id, key) = license_with_policy(&server, &owner, &format!("maxActivations: {SEATS}")).await;
        licenses.push((id, key));
    }
    let url = format!("{}/graphql", server.base_url);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (license, key) in &licenses {
        for n in 0..DEVICES_PER_LICENSE {
            let (http, url, key, answered) = (http.clone(), url.clone(), key.clone(), answered.clone());
            let fingerprint = format!("fp-{license}-{n}");
            let license = license.clone();
            tasks.push(tokio::spawn(async move {
                let outcome = activate_once(&http, &url, &key, &fingerprint).await;
                if outcome != Outcome::Unanswered {
                    answered.fetch_add(1, Ordering::SeqCst);
                }
                (license, key, fingerprint, outcome)
            }));
        }
    }
    // Kill it once some activations are answered and most are not.
    let total = LICENSES * DEVICES_PER_LICENSE;
    // (Polled tightly: on a fast machine the whole burst takes about a second.)
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while answered.load(Ordering::SeqCst) < 10 {
        assert!(std::time::Instant::now() < deadline, "no activation was answered");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill_and_restart().await;
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let unanswered = outcomes.iter().filter(|o| o.3 == Outcome::Unanswered).count();
    assert!(
        unanswered > 0 && unanswered < total,
        "the kill should land mid-flight: {unanswered} of {total} unanswered"
    );

    // Nothing lost, nothing invented: seats equal the devices holding one, never above the
    // limit, and every activation the server answered is among them.
    let mut activated: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (license, _, _, outcome) in &outcomes {
        match outcome {
            Outcome::Activated(id) => {
                activated.entry(license.clone()).or_default().insert(id.clone());
            }
            Outcome::Refused(code) => assert_eq!(code, "ACTIVATION_LIMIT_REACHED", "{outcome:?}"),
            Outcome::Unanswered => {}
        }
    }
    for (license, _) in &licenses {
        let (active, holding) = seats(&server, license).await;
        assert_eq!(active, i64::try_from(holding.len()).unwrap(), "license {license}");
        assert!(holding.len() <= SEATS, "license {license}: {} seats", holding.len());
        let answered = activated.get(license).cloned().unwrap_or_default();
        assert!(
            answered.is_subset(&holding),
            "license {license}: {answered:?} not in {holding:?}"
        );
    }

    // Retrying what got no answer (as the shipped software does) fills each license exactly.
    for (license, key, fingerprint, outcome) in &outcomes {
        if *outcome == Outcome::Unanswered {
            match activate_once(&http, &url, key, fingerprint).await {
                Outcome::Activated(id) => {
                    activated.entry(license.clone()).or_default().insert(id);
                }
                Outcome::Refused(code) => assert_eq!(code, "ACTIVATION_LIMIT_REACHED"),
                Outcome::Unanswered => panic!("the restarted server did not answer"),
            }
        }
    }
    for (license, _) in &licenses {
        let (active, holding) = seats(&server, license).await;
        assert_eq!(active, i64::try_from(SEATS).unwrap(), "license {license}");
        assert_eq!(holding.len(), SEATS, "license {license}");
        assert_eq!(activated.get(license), Some(&holding), "license {license}");
    }
}

on_both_databases!(sigkill_during_activations, sigkill_mid_activations);
