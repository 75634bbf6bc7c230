//! The live alert feed behind the `alerts` GraphQL subscription: alerts as they are committed,
//! by whichever process raised them (an API process, a worker on another host).
//!
//! - With `REDIS_URL`, the workers publish: every second each worker's scheduler follows the
//!   `alerts` table ([`domain::alerts::AlertTail`]) and publishes each new alert on the Redis
//!   channel [`CHANNEL`], once across all workers (a `SET NX` claim per alert). Every API process
//!   subscribes to the channel.
//! - Without Redis (the embedded single-process default), each API process follows the table
//!   itself, once a second.
//!
//! Either way an [`AlertFeed`] hands the alerts to the subscribers of its process. The feed is
//! live, not a log: a subscriber hears what is raised while it is connected, and the `alerts`
//! query lists the rest.

use std::time::Duration;

use domain::Domain;
use domain::alerts::AlertTail;
use entity::alert;
use redis::AsyncCommands as _;
use tokio::sync::broadcast;

/// The Redis pub/sub channel new alerts are published on (JSON of the alert row).
pub const CHANNEL: &str = "licensing:alerts";
/// How long a worker's claim on publishing an alert is kept.
const CLAIM_SECONDS: u64 = 24 * 3600;
/// How often the table is followed.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);
/// Alerts a slow subscriber may fall behind by before it skips some.
const BACKLOG: usize = 1024;

/// New alerts of every vendor, for this process's subscribers (each filters its own vendor's).
#[derive(Clone)]
pub struct AlertFeed(broadcast::Sender<alert::Model>);

impl Default for AlertFeed {
    fn default() -> Self {
        Self(broadcast::channel(BACKLOG).0)
    }
}

impl AlertFeed {
    /// Starts the feed's source in the background: the Redis channel when `redis_url` is set,
    /// else the `alerts` table.
    #[must_use]
    pub fn start(domain: Domain, redis_url: Option<String>) -> Self {
        let feed = Self::default();
        let sender = feed.0.clone();
        match redis_url {
            Some(url) => tokio::spawn(listen_to_redis(url, sender)),
            None => tokio::spawn(follow_table(domain, sender)),
        };
        feed
    }

    /// A receiver of the alerts committed from now on.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<alert::Model> {
        self.0.subscribe()
    }
}

async fn follow_table(domain: Domain, sender: broadcast::Sender<alert::Model>) {
    let mut tail = domain.alert_tail();
    let mut interval = tokio::time::interval(FOLLOW_INTERVAL);
    loop {
        interval.tick().await;
        match domain.follow_alerts(&mut tail).await {
            Ok(alerts) => {
                for alert in alerts {
                    // No subscriber right now is fine.
                    let _ = sender.send(alert);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not follow new alerts"),
        }
    }
}

/// Subscribes to [`CHANNEL`], reconnecting after a second when Redis goes away (alerts
/// published meanwhile are not heard live).
async fn listen_to_redis(url: String, sender: broadcast::Sender<alert::Model>) {
    use futures::StreamExt as _;
    loop {
        let subscribed = async {
            let mut pubsub = redis::Client::open(url.as_str())?.get_async_pubsub().await?;
            pubsub.subscribe(CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match subscribed.await {
            Ok(mut pubsub) => {
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    match serde_json::from_slice::<alert::Model>(message.get_payload_bytes()) {
                        Ok(alert) => {
                            let _ = sender.send(alert);
                        }
                        Err(e) => tracing::warn!(error = %e, "unreadable message on {CHANNEL}"),
                    }
                }
                tracing::warn!("the Redis alert channel closed; subscribing again");
            }
            Err(e) => tracing::warn!(error = %e, "could not subscribe to {CHANNEL}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Publishes the alerts committed since the last call on `tail`, each once across all
/// workers; returns how many this worker published. Alerts it could not publish (Redis down)
/// are tried again on the next call.
pub(crate) async fn publish(
    domain: &Domain,
    tail: &mut AlertTail,
    redis: &mut redis::aio::ConnectionManager,
) -> anyhow::Result<usize> {
    let mut published = 0;
    let mut alerts = domain.follow_alerts(tail).await?.into_iter();
    while let Some(alert) = alerts.next() {
        match publish_once(redis, &alert).await {
            Ok(true) => published += 1,
            Ok(false) => {}
            Err(e) => {
                tail.retry(&alert);
                alerts.for_each(|a| tail.retry(&a));
                return Err(e);
            }
        }
    }
    Ok(published)
}

/// Claims `alert` for this worker and publishes it, unless another worker claimed it first;
/// returns whether this worker published it.
async fn publish_once(redis: &mut redis::aio::ConnectionManager, alert: &alert::Model) -> anyhow::Result<bool> {
    let claim = format!("{CHANNEL}:published:{}", alert.id);
    let options = redis::SetOptions::default()
        .conditional_set(redis::ExistenceCheck::NX)
        .with_expiration(redis::SetExpiry::EX(CLAIM_SECONDS));
    let claimed: Option<String> = redis.set_options(&claim, 1, options).await?;
    if claimed.is_none() {
        return Ok(false);
    }
    let published: redis::RedisResult<i64> = redis.publish(CHANNEL, serde_json::to_string(alert)?).await;
    if let Err(e) = published {
        // Give the claim back, so this worker or another publishes it on a later pass.
        let _: redis::RedisResult<i64> = redis.del(&claim).await;
        return Err(e.into());
    }
    Ok(true)
}
