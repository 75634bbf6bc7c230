//! The email job (`licensing.email`): deliver one outbox row. The relay
//! (`scheduler`) hands the queue the rows that are due and that no queue holds; the
//! row, not the job, is the record of the email, so a job for a row already sent does nothing.

use std::time::Duration;

use apalis::prelude::BoxDynError;
use domain::outbox::Delivery;
use serde::{Deserialize, Serialize};

use super::{Job, Shared};

/// Deliver one outbox row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliverEmail {
    /// The row.
    pub id: String,
}

impl Job for DeliverEmail {
    const QUEUE: &'static str = "licensing.email";
}

/// Leases the row, sends it, and records the outcome on the row.
pub(crate) async fn deliver(job: DeliverEmail, ctx: Shared) -> Result<(), BoxDynError> {
    let Some(email) = ctx.domain.start_delivery(&job.id).await? else {
        return Ok(());
    };
    // A send must end inside its lease, or another worker may take the row.
    let limit = Duration::from_secs(u64::try_from(domain::outbox::DELIVERY_LEASE_SECONDS - 10).unwrap_or(30));
    let outcome = match tokio::time::timeout(limit, ctx.mailer.send(&email)).await {
        Ok(outcome) => outcome,
        Err(_) => Delivery::Transient(format!("no answer from the mail server within {} s", limit.as_secs())),
    };
    if let Delivery::Transient(e) | Delivery::Permanent(e) = &outcome {
        tracing::warn!(id = %email.id, attempt = email.attempts, error = %e, "email not delivered");
    }
    ctx.domain.finish_delivery(&email, outcome).await?;
    Ok(())
}
