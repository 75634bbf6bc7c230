//! Webhook sender: fans events out, claims due deliveries (at most [`MAX_IN_FLIGHT`] at once,
//! four per endpoint) and POSTs each in its own task with the `Licensing-Signature` header, a
//! 10 s timeout and no redirects; the outcome goes back to the delivery row. Every connection
//! goes through `CheckedResolver`, so a production host that later resolves to a private
//! address (DNS rebinding) is refused at send time too. Prunes the delivery log every ten
//! minutes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::Domain;
use domain::webhooks::deliveries::{
    Attempt, ClaimedDelivery, MAX_ERROR_BYTES, PER_ENDPOINT_CONCURRENCY, truncate_error,
};
use domain::webhooks::targets::TargetRules;
use hmac::{Hmac, Mac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::{Notify, Semaphore};

/// How long one POST may take, body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries in flight at once in this process (each endpoint also has its own cap).
pub const MAX_IN_FLIGHT: usize = 64;
/// How often the sender looks for due deliveries.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How often the delivery log is pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);

/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
///
/// # Errors
/// Never in practice (HMAC takes keys of any length); the error names the key problem.
pub fn signature(secret: &str, unix: i64, body: &[u8]) -> Result<String, String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(format!("{unix}.").as_bytes());
    mac.update(body);
    Ok(format!("t={unix},v1={}", hex::encode(mac.finalize().into_bytes())))
}

/// The delivered body: `{"id","type","created","vendor","data"}`.
fn body(claimed: &ClaimedDelivery) -> Vec<u8> {
    json!({
        "id": claimed.event.id,
        "type": claimed.event.event_type,
        "created": claimed.event.created_at.to_rfc3339(),
        "vendor": claimed.vendor_slug,
        "data": claimed.event.payload,
    })
    .to_string()
    .into_bytes()
}

/// Resolves hosts with the system resolver and keeps only the addresses the deployment's
/// [`TargetRules`] allow; a host left with none fails to connect.
struct CheckedResolver(TargetRules);

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let rules = self.0;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved.iter().copied().filter(|a| rules.allows_ip(a.ip())).collect();
            if allowed.is_empty() {
                let addresses: Vec<String> = resolved.iter().map(|a| a.ip().to_string()).collect();
                return Err(format!(
                    "{host} resolves to {}: not a public address, and production only delivers to public addresses",
                    addresses.join(", ")
                )
                .into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// The one HTTP client of the sender: 10 s timeout, no redirects, the checked resolver.
fn client(rules: TargetRules) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(CheckedResolver(rules)))
        .user_agent(concat!("licensing-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// An error with its causes (reqwest's own message omits them: "error sending request").
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Sends one claimed delivery and says how it went. The URL is checked against the rules again
/// (they may be stricter than when the endpoint was saved; an address literal skips the
/// resolver).
async fn send(domain: &Domain, client: &reqwest::Client, claimed: &ClaimedDelivery) -> Attempt {
    let url = match domain.webhook_targets.parse_url(&claimed.endpoint.url) {
        Ok(url) => url,
        Err(e) => return Attempt::Failed(None, truncate_error(&e.to_string())),
    };
    let secret = match domain.webhook_secret(&claimed.endpoint) {
        Ok(secret) => secret,
        Err(e) => return Attempt::Failed(None, truncate_error(&e.to_string())),
    };
    let body = body(claimed);
    let signature = match signature(&secret, domain.clock.now().timestamp(), &body) {
        Ok(signature) => signature,
        Err(e) => return Attempt::Failed(None, truncate_error(&e)),
    };
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header("Licensing-Signature", signature)
        .header("Licensing-Event-Id", &claimed.event.id)
        .header("Licensing-Event-Type", &claimed.event.event_type)
        .body(body)
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(e) => return Attempt::Failed(None, truncate_error(&describe(e))),
    };
    let status = i32::from(response.status().as_u16());
    if response.status().is_success() {
        return Attempt::Delivered(status);
    }
    // The first KiB of the answer, for the delivery log; a body that never ends is cut there.
    let mut start = Vec::new();
    while start.len() < MAX_ERROR_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => start.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&start);
    Attempt::Failed(Some(status), truncate_error(&format!("HTTP {status}: {text}")))
}

/// What this process has in flight per endpoint, and when it last served each: an endpoint at
/// its cap is not looked at until one of its sends finishes, and of the others the emptiest,
/// then the longest unserved, go first, so the slots one busy endpoint frees do not starve the
/// others (the database count, across workers, still decides the cap).
#[derive(Clone, Default)]
struct InFlight(Arc<Mutex<Lanes>>);

#[derive(Default)]
struct Lanes {
    /// Sends in flight, per endpoint.
    sending: HashMap<String, u64>,
    /// The claim number at which each endpoint was last served.
    served: HashMap<String, u64>,
    /// Claims so far.
    claims: u64,
}

impl InFlight {
    fn lanes(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The endpoints at [`PER_ENDPOINT_CONCURRENCY`].
    fn full(&self) -> Vec<String> {
        self.lanes()
            .sending
            .iter()
            .filter(|(_, n)| **n >= PER_ENDPOINT_CONCURRENCY)
            .map(|(endpoint, _)| endpoint.clone())
            .collect()
    }

    /// Puts `endpoints` in the order to serve them.
    fn order(&self, endpoints: &mut [String]) {
        let lanes = self.lanes();
        endpoints.sort_by_key(|endpoint| {
            (
                lanes.sending.get(endpoint).copied().unwrap_or(0),
                lanes.served.get(endpoint).copied().unwrap_or(0),
            )
        });
    }

    fn started(&self, endpoint: &str) {
        let mut lanes = self.lanes();
        lanes.claims += 1;
        let claim = lanes.claims;
        lanes.served.insert(endpoint.to_owned(), claim);
        *lanes.sending.entry(endpoint.to_owned()).or_default() += 1;
    }

    fn finished(&self, endpoint: &str) {
        let mut lanes = self.lanes();
        if let Some(n) = lanes.sending.get_mut(endpoint) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                lanes.sending.remove(endpoint);
            }
        }
    }
}

/// The sender loop, until `stop` changes. It wakes every `POLL_INTERVAL` (500 ms) to fan new
/// events out (at once again while a whole batch came back) and to claim due deliveries, and
/// also whenever a send finishes, so a free slot is filled at once: a fast endpoint is limited
/// by its own answers, not by the poll. Deliveries still in flight at the end are abandoned
/// with their lease: another sender retries them once it lapses.
pub async fn run(domain: Arc<Domain>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let client = match client(domain.webhook_targets) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client: webhooks are not sent");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let in_flight = InFlight::default();
    let wake = Arc::new(Notify::new());
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    let mut pruned: Option<Instant> = None;
    let mut more_events = false;
    loop {
        let ticked = tokio::select! {
            _ = interval.tick() => true,
            () = wake.notified() => false,
            _ = stop.changed() => return,
        };
        if ticked || more_events {
            more_events = match domain.fan_out_webhook_events().await {
                Ok(more) => more,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook fan-out failed");
                    false
                }
            };
            if more_events {
                wake.notify_one();
            }
        }
        if ticked && pruned.is_none_or(|at| at.elapsed() >= PRUNE_INTERVAL) {
            pruned = Some(Instant::now());
            if let Err(e) = domain.prune_webhook_log().await {
                tracing::warn!(error = %e, "could not prune the webhook log");
            }
        }
        if permits.available_permits() == 0 {
            continue;
        }
        let mut endpoints = match domain.endpoints_with_due_webhooks(&in_flight.full()).await {
            Ok(endpoints) => endpoints,
            Err(e) => {
                tracing::warn!(error = %e, "could not look for due webhook deliveries");
                continue;
            }
        };
        in_flight.order(&mut endpoints);
        for endpoint in endpoints {
            let room = u64::try_from(permits.available_permits()).unwrap_or(0);
            if room == 0 {
                break;
            }
            let claimed = match domain.claim_webhook_deliveries(&endpoint, room).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "could not claim webhook deliveries");
                    break;
                }
            };
            for delivery in claimed {
                // Only this loop takes permits, and it claimed no more than were free.
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    break;
                };
                in_flight.started(&delivery.endpoint.id);
                let (domain, client, in_flight, wake) = (
                    Arc::clone(&domain),
                    client.clone(),
                    in_flight.clone(),
                    Arc::clone(&wake),
                );
                tokio::spawn(async move {
                    let attempt = send(&domain, &client, &delivery).await;
                    if let Err(e) = domain.finish_webhook_delivery(&delivery, attempt).await {
                        tracing::warn!(error = %e, delivery = %delivery.delivery.id, "could not record a webhook attempt (retried after the lease)");
                    }
                    in_flight.finished(&delivery.endpoint.id);
                    drop(permit);
                    wake.notify_one();
                });
            }
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_t_dot_body() {
        // Expected value from `printf '1.{}' | openssl dgst -sha256 -hmac key`.
        let expected = "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224";
        assert_eq!(signature("key", 1, b"{}").as_deref(), Ok(expected));
    }

    /// The README's Rust snippet for integrators, as printed there.
    fn readme_verify(secret: &str, header: &str, body: &[u8], now: i64) -> bool {
        let field = |k: &str| header.split(',').find_map(|p| p.strip_prefix(k)?.strip_prefix('='));
        let (Some(t), Some(v1)) = (field("t"), field("v1")) else {
            return false;
        };
        let (Ok(t_num), Ok(sig)) = (t.parse::<i64>(), hex::decode(v1)) else {
            return false;
        };
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(body);
        (now - t_num).abs() <= 300 && mac.verify_slice(&sig).is_ok()
    }

    #[test]
    fn the_readme_snippet_verifies_our_signature() {
        let header = signature("whsec_x", 1_000, b"{\"id\":1}").unwrap();
        assert!(readme_verify("whsec_x", &header, b"{\"id\":1}", 1_100));
        assert!(!readme_verify("whsec_x", &header, b"{\"id\":2}", 1_100), "another body");
        assert!(
            !readme_verify("whsec_y", &header, b"{\"id\":1}", 1_100),
            "another secret"
        );
        assert!(!readme_verify("whsec_x", &header, b"{\"id\":1}", 2_000), "too old");
    }

    #[tokio::test]
    async fn the_resolver_drops_addresses_production_refuses() {
        let production = CheckedResolver(TargetRules::PublicHttpsOnly);
        let error = production.resolve("localhost".parse().unwrap()).await.err().unwrap();
        assert!(error.to_string().contains("not a public address"), "{error}");
        let development = CheckedResolver(TargetRules::AnyHost);
        let addresses: Vec<SocketAddr> = development
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(
            addresses.iter().all(|a| a.ip().is_loopback()) && !addresses.is_empty(),
            "{addresses:?}"
        );
    }
}
