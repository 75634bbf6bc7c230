//! The billing jobs (`licensing.billing`), on their own queue so a long reconciliation never
//! holds up the heartbeat sweep or the email:
//!
//! - [`BillingJob::ReRead`]: one inbox row (a webhook event, or a license just linked): re-read
//!   its subscription from Stripe and apply it. A failed read is retried with backoff (the
//!   row, not the job, keeps the attempts).
//! - [`BillingJob::Reconcile`]: one pass over every subscription, every `BILLING_SYNC_SECS`
//!   (once across the fleet: the tick's idempotency key, and the pass lease) or for a
//!   `syncBilling` request. An error on the way (Stripe unreachable, 429, 5xx after retries)
//!   ends the pass with the error recorded on its runs and resolves nothing; no license is
//!   changed on account of an outage.

use std::time::Duration;

use apalis::prelude::BoxDynError;
use domain::billing::{BillingPass, PassStart, ReRead, Subscription};
use serde::{Deserialize, Serialize};

use super::{Ctx, Job, Shared};
use crate::stripe::StripeClient;

/// The reconciliation's row in `worker_ticks`.
pub const BILLING_SYNC: &str = "billing_sync";
/// How long a requested pass waits for a running one to finish.
const WAIT_FOR_RUNNING_PASS: Duration = Duration::from_secs(15 * 60);

/// A billing job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum BillingJob {
    /// Re-read the subscription of one inbox row.
    ReRead {
        /// The inbox row.
        event: String,
    },
    /// Reconcile every subscription.
    Reconcile {
        /// The `syncBilling` run it is for; `None` when scheduled.
        request: Option<String>,
        /// The tick (Unix time / period) it was scheduled for.
        slot: u64,
    },
}

impl Job for BillingJob {
    const QUEUE: &'static str = "licensing.billing";
}

/// Runs one billing job.
pub(crate) async fn run(job: BillingJob, ctx: Shared) -> Result<(), BoxDynError> {
    match job {
        BillingJob::ReRead { event } => re_read(&ctx, &event).await,
        BillingJob::Reconcile { request, slot } => reconcile(&ctx, request.as_deref(), slot).await,
    }
}

async fn re_read(ctx: &Ctx, id: &str) -> Result<(), BoxDynError> {
    let Some(event) = ctx.domain.pending_stripe_event(id).await? else {
        return Ok(());
    };
    let (Some(subscription_id), Some(stripe)) = (&event.subscription_id, &ctx.stripe) else {
        let outcome = if ctx.stripe.is_none() {
            ReRead::Failed("billing sync is off: STRIPE_SECRET_KEY is not set".into())
        } else {
            ReRead::Done
        };
        ctx.domain.finish_stripe_event(&event, outcome).await?;
        return Ok(());
    };
    let outcome = match stripe.subscription(subscription_id).await {
        Ok(Some(value)) => match Subscription::from_stripe(&value) {
            Ok(subscription) => {
                let applied = ctx.domain.apply_subscription(&subscription, None).await?;
                tracing::info!(
                    event = %event.event_id, subscription = %subscription.id, status = %subscription.status_raw,
                    licenses = applied.licenses, changed = applied.changed, "subscription re-read"
                );
                ReRead::Done
            }
            Err(e) => {
                tracing::warn!(event = %event.event_id, error = %e, "the billing API sent a subscription that does not parse");
                ReRead::Done
            }
        },
        Ok(None) => {
            tracing::warn!(event = %event.event_id, subscription = %subscription_id, "the billing API has no such subscription");
            ReRead::Done
        }
        Err(e) => {
            tracing::warn!(event = %event.event_id, error = %e, "could not re-read a subscription (retried later)");
            ReRead::Failed(e.to_string())
        }
    };
    ctx.domain.finish_stripe_event(&event, outcome).await?;
    Ok(())
}

async fn reconcile(ctx: &Ctx, request: Option<&str>, slot: u64) -> Result<(), BoxDynError> {
    let waiting_since = tokio::time::Instant::now();
    let mut pass = loop {
        match ctx.domain.begin_billing_pass(request).await? {
            PassStart::Started(pass) => break pass,
            PassStart::AlreadyDone => return Ok(()),
            // A scheduled pass finds the next tick soon enough; a request waits its turn.
            PassStart::Busy if request.is_none() || waiting_since.elapsed() > WAIT_FOR_RUNNING_PASS => return Ok(()),
            PassStart::Busy => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    };
    ctx.domain.worker_tick_started(BILLING_SYNC).await?;
    let outcome = match &ctx.stripe {
        Some(stripe) => walk(ctx, stripe, &mut pass).await,
        None => Err("billing sync is off: STRIPE_SECRET_KEY is not set".to_owned()),
    };
    if let Err(e) = &outcome {
        tracing::warn!(error = %e, "billing reconciliation could not finish; no license was changed on account of it");
    }
    ctx.domain.finish_billing_pass(pass, outcome.err()).await?;
    let pruned = ctx.domain.prune_stripe_events().await?;
    if pruned > 0 {
        tracing::debug!(pruned, "old billing events pruned");
    }
    ctx.domain
        .worker_tick_finished(BILLING_SYNC, i64::try_from(slot)?)
        .await?;
    Ok(())
}

/// Applies every subscription Stripe lists, then each linked one the list did not return.
async fn walk(ctx: &Ctx, stripe: &StripeClient, pass: &mut BillingPass) -> Result<(), String> {
    let domain = &ctx.domain;
    let mut after: Option<String> = None;
    let mut seen = 0_usize;
    loop {
        domain.renew_billing_pass(pass).await.map_err(|e| e.to_string())?;
        let page = stripe
            .subscriptions(after.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        for value in &page.data {
            match Subscription::from_stripe(value) {
                Ok(subscription) => {
                    domain
                        .apply_subscription(&subscription, Some(pass))
                        .await
                        .map_err(|e| e.to_string())?;
                    seen += 1;
                }
                Err(e) => tracing::warn!(error = %e, "skipped a subscription that does not parse"),
            }
        }
        let last = page.data.last().and_then(|v| v.get("id")).and_then(|v| v.as_str());
        match last {
            Some(last) if page.has_more => after = Some(last.to_owned()),
            _ => break,
        }
    }
    for id in domain
        .unseen_linked_subscriptions(pass)
        .await
        .map_err(|e| e.to_string())?
    {
        match stripe.subscription(&id).await.map_err(|e| e.to_string())? {
            Some(value) => {
                let subscription = Subscription::from_stripe(&value).map_err(|e| e.to_string())?;
                domain
                    .apply_subscription(&subscription, Some(pass))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            None => domain
                .subscription_missing(pass, &id)
                .await
                .map_err(|e| e.to_string())?,
        }
    }
    tracing::info!(subscriptions = seen, "billing reconciliation walked the subscriptions");
    Ok(())
}
