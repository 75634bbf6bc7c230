//! Cross-process freshness of the hot path's read model ([`domain::devices::ReadModel`]) over
//! Redis, for deployments with `REDIS_URL`: each license this process changes is published on
//! [`CHANNEL`], and each process forgets the licenses the others publish, so a change made in
//! one process is seen by the next validation in every other at once.
//!
//! While subscribed, a process trusts the rows it read for
//! [`TRUSTED_FOR`](domain::devices::read_model::TRUSTED_FOR). Whenever the feed breaks (Redis
//! down, a publish failed, this process fell behind its own changes) it forgets everything,
//! falls back to the rules without a feed (SQLite's data version, or
//! [`FRESH_FOR`](domain::devices::read_model::FRESH_FOR) on PostgreSQL) until it is subscribed
//! again, and on reconnecting tells the others to forget everything too (they may have missed
//! what it changed meanwhile).

use std::time::Duration;

use domain::Domain;
use redis::AsyncCommands as _;
use tokio::sync::broadcast::error::RecvError;

/// The Redis channel changed licenses are published on: `<origin> <license id>`, or
/// `<origin> *` for "forget everything".
pub const CHANNEL: &str = "licensing:read-model";
/// Wait before subscribing again after the feed broke.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Starts the feed in the background (each process that serves or changes licenses: the API
/// and `licensing-worker`).
pub fn start(domain: Domain, redis_url: String) {
    tokio::spawn(async move {
        let origin = domain::new_id();
        loop {
            if let Err(e) = follow(&domain, &redis_url, &origin).await {
                tracing::warn!(error = %e, "the read model feed on Redis broke; rows are trusted as without Redis until it is back");
            }
            domain.read_model.set_feed_live(false);
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    });
}

/// Subscribes, then passes changes both ways until something fails.
async fn follow(domain: &Domain, url: &str, origin: &str) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    let client = redis::Client::open(url)?;
    let mut publisher = client.get_multiplexed_async_connection().await?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(CHANNEL).await?;
    // Changes from now on are published; what this process changed before is covered by
    // telling everyone to forget everything.
    let mut changed = domain.read_model.forgotten();
    let _: i64 = publisher.publish(CHANNEL, format!("{origin} *")).await?;
    domain.read_model.set_feed_live(true);
    tracing::info!("read model feed subscribed on {CHANNEL}");
    let mut messages = pubsub.on_message();
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    anyhow::bail!("the subscription closed");
                };
                let payload: String = message.get_payload()?;
                match payload.split_once(' ') {
                    Some((from, _)) if from == origin => {}
                    Some((_, "*")) => domain.read_model.forget_all(),
                    Some((_, license_id)) => domain.read_model.forget_remote(license_id),
                    None => tracing::warn!(payload, "unreadable message on {CHANNEL}"),
                }
            }
            license_id = changed.recv() => {
                let message = match license_id {
                    Ok(license_id) => format!("{origin} {license_id}"),
                    Err(RecvError::Lagged(_)) => format!("{origin} *"),
                    Err(RecvError::Closed) => return Ok(()),
                };
                let _: i64 = publisher.publish(CHANNEL, message).await?;
            }
        }
    }
}
