//! A fleet made through the real API: one product and policy, `licenses` licenses of
//! [`DEVICES_PER_LICENSE`] seats, every seat activated online. The device calls are driven
//! over the whole fleet in turn, as a vendor's installations call: each device stays inside
//! its own per-device budget (SECURITY.md), so the bench measures the product as shipped.

use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use hyper::header::HeaderValue;
use serde_json::{Value, json};

use protocol::trusted_documents::{HEARTBEAT, TrustedDocument, VALIDATE_LICENSE};

use crate::harness::{bearer, graphql};

/// Devices activated on each license (and its seat count).
pub const DEVICES_PER_LICENSE: usize = 100;
/// Activations in flight while seeding.
const SEEDING_CONNECTIONS: usize = 16;

/// One activated device.
pub struct Device {
    /// The key of its license.
    pub key: Arc<str>,
    /// Its fingerprint: `b<license>-<device>`.
    pub fingerprint: String,
    /// Its device token.
    pub token: String,
}

/// The activated fleet.
pub struct Fleet {
    /// Every device, license by license.
    pub devices: Vec<Device>,
}

impl Fleet {
    /// A `validateLicense` request per device, by trusted document id (as software that
    /// validates online sends it).
    pub fn validations(&self) -> Vec<(Bytes, Option<HeaderValue>)> {
        self.devices
            .iter()
            .map(|d| {
                (
                    trusted_body(
                        VALIDATE_LICENSE,
                        &json!({ "input": { "licenseKey": &*d.key, "fingerprint": d.fingerprint } }),
                    ),
                    None,
                )
            })
            .collect()
    }

    /// A `heartbeat` request per device, by trusted document id (as the client sends it).
    ///
    /// # Errors
    /// A device token that is not a valid header value.
    pub fn heartbeats(&self) -> anyhow::Result<Vec<(Bytes, Option<HeaderValue>)>> {
        let body = trusted_body(HEARTBEAT, &json!({}));
        self.devices
            .iter()
            .map(|d| Ok((body.clone(), Some(bearer(&d.token)?))))
            .collect()
    }
}

/// Makes the catalog and activates `licenses` × [`DEVICES_PER_LICENSE`] devices through the
/// API on `port` with the owner `token`.
pub async fn seed(port: u16, token: &str, licenses: usize) -> anyhow::Result<Fleet> {
    let product = graphql(
        port,
        Some(token),
        "mutation { createProduct(input: {name: \"Bench\", code: \"bench\"}) { id } }",
        json!({}),
    )
    .await?["createProduct"]["id"]
        .clone();
    let policy = graphql(
        port,
        Some(token),
        "mutation($p: ID!, $m: Int!) { createPolicy(input: {productId: $p, name: \"B\", maxActivations: $m, heartbeatIntervalSeconds: 3600}) { id } }",
        json!({ "p": product, "m": DEVICES_PER_LICENSE }),
    )
    .await?["createPolicy"]["id"]
    .clone();
    let mut keys = Vec::with_capacity(licenses);
    for _ in 0..licenses {
        let issued = graphql(
            port,
            Some(token),
            "mutation($p: ID!) { issueLicense(input: {policyId: $p}) { key } }",
            json!({ "p": policy }),
        )
        .await?;
        keys.push(Arc::<str>::from(
            issued["issueLicense"]["key"].as_str().unwrap_or_default(),
        ));
    }
    let wanted: Vec<(Arc<str>, String)> = keys
        .iter()
        .enumerate()
        .flat_map(|(l, key)| (0..DEVICES_PER_LICENSE).map(move |d| (key.clone(), format!("b{l}-{d}"))))
        .collect();
    let wanted = Arc::new(wanted);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..SEEDING_CONNECTIONS {
        let (wanted, next) = (wanted.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut activated = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((key, fingerprint)) = wanted.get(i) else {
                    return anyhow::Ok(activated);
                };
                let answer: Value = graphql(
                    port,
                    None,
                    "mutation($k: String!, $f: String!) { activateDevice(input: {licenseKey: $k, fingerprint: $f}) { deviceToken } }",
                    json!({ "k": &**key, "f": fingerprint }),
                )
                .await
                .with_context(|| format!("activating {fingerprint}"))?;
                activated.push(Device {
                    key: key.clone(),
                    fingerprint: fingerprint.clone(),
                    token: answer["activateDevice"]["deviceToken"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                });
            }
        }));
    }
    let mut devices = Vec::with_capacity(wanted.len());
    for task in tasks {
        devices.extend(task.await??);
    }
    devices.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    Ok(Fleet { devices })
}

/// The body naming a trusted document by id.
fn trusted_body(document: TrustedDocument, variables: &Value) -> Bytes {
    let body = json!({ "documentId": document.id(), "operationName": document.operation_name, "variables": variables });
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}
