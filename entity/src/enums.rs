//! Enums stored as short strings, shared by every table that holds them.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A staff user's or API token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    /// Everything, including other owners.
    #[sea_orm(string_value = "OWNER")]
    Owner,
    /// Everything but creating owners.
    #[sea_orm(string_value = "ADMIN")]
    Admin,
    /// Customer-success staff: read, suspend and reinstate, release seats, acknowledge.
    #[sea_orm(string_value = "SUPPORT")]
    Support,
    /// ERP/CRM integrations: catalog, customers and licenses; no tokens, staff or settings.
    #[sea_orm(string_value = "INTEGRATION")]
    Integration,
    /// Read only.
    #[sea_orm(string_value = "READ_ONLY")]
    ReadOnly,
}

/// Where a device may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentMode {
    /// Activation and validation over the network.
    #[sea_orm(string_value = "ONLINE")]
    Online,
    /// Activation by files only.
    #[sea_orm(string_value = "OFFLINE")]
    Offline,
    /// Either.
    #[sea_orm(string_value = "HYBRID")]
    Hybrid,
}

/// How often a meter's usage starts again from zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResetPeriod {
    /// Never resets.
    #[sea_orm(string_value = "NEVER")]
    Never,
    /// Every UTC day.
    #[sea_orm(string_value = "DAILY")]
    Daily,
    /// Every ISO week.
    #[sea_orm(string_value = "WEEKLY")]
    Weekly,
    /// Every calendar month.
    #[sea_orm(string_value = "MONTHLY")]
    Monthly,
    /// Every calendar year.
    #[sea_orm(string_value = "YEARLY")]
    Yearly,
}

/// What happens to the seat of a device that stopped heartbeating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeadDeviceAction {
    /// The seat is freed.
    #[sea_orm(string_value = "RELEASE_SEAT")]
    ReleaseSeat,
    /// The seat stays taken.
    #[sea_orm(string_value = "KEEP_SEAT")]
    KeepSeat,
}

/// A license's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LicenseStatus {
    /// In force.
    #[sea_orm(string_value = "ACTIVE")]
    Active,
    /// Paused by staff or billing; can be reinstated.
    #[sea_orm(string_value = "SUSPENDED")]
    Suspended,
    /// Ended for good.
    #[sea_orm(string_value = "REVOKED")]
    Revoked,
    /// Past its expiry.
    #[sea_orm(string_value = "EXPIRED")]
    Expired,
}

/// A device's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeviceStatus {
    /// Activated and current.
    #[sea_orm(string_value = "ACTIVE")]
    Active,
    /// The license changed since the device's file; it should fetch a new one.
    #[sea_orm(string_value = "PENDING_SYNC")]
    PendingSync,
    /// Checked out for off-network use.
    #[sea_orm(string_value = "CHECKED_OUT")]
    CheckedOut,
    /// Stopped heartbeating past its deadline.
    #[sea_orm(string_value = "DEAD")]
    Dead,
    /// Deactivated or released; holds no seat.
    #[sea_orm(string_value = "RELEASED")]
    Released,
}

/// What kind of suspicious consumption an anomaly describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AnomalyKind {
    /// Usage far above the license's normal rate.
    #[sea_orm(string_value = "USAGE_SPIKE")]
    UsageSpike,
    /// The device's clock went backwards.
    #[sea_orm(string_value = "CLOCK_TAMPER")]
    ClockTamper,
    /// An older copy of the usage ledger was restored.
    #[sea_orm(string_value = "LEDGER_ROLLBACK")]
    LedgerRollback,
    /// Two diverging copies of one ledger.
    #[sea_orm(string_value = "LEDGER_FORK")]
    LedgerFork,
    /// Records missing from a ledger.
    #[sea_orm(string_value = "LEDGER_GAP")]
    LedgerGap,
    /// Many activations in a short time.
    #[sea_orm(string_value = "ACTIVATION_BURST")]
    ActivationBurst,
    /// A device's fingerprint components keep changing.
    #[sea_orm(string_value = "FINGERPRINT_DRIFT")]
    FingerprintDrift,
    /// Usage reported by a device marked dead.
    #[sea_orm(string_value = "USAGE_WHILE_DEAD")]
    UsageWhileDead,
    /// A device that keeps heartbeating stopped reporting usage it normally reports.
    #[sea_orm(string_value = "USAGE_DROP")]
    UsageDrop,
    /// A period's allowance will run out well before the period resets.
    #[sea_orm(string_value = "USAGE_PACE")]
    UsagePace,
    /// One fingerprint active under licenses of several customers.
    #[sea_orm(string_value = "SHARED_FINGERPRINT")]
    SharedFingerprint,
    /// Usage a device reported late took a period past its limit plus overage (counted: it
    /// happened).
    #[sea_orm(string_value = "USAGE_OVER_LIMIT")]
    UsageOverLimit,
    /// A device re-activated (a reinstall, or a takeover of its fingerprint) more than once
    /// within 24 hours.
    #[sea_orm(string_value = "DEVICE_REACTIVATION")]
    DeviceReactivation,
}

/// Where a usage record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UsageSource {
    /// `recordUsage` from a device online.
    #[sea_orm(string_value = "ONLINE")]
    Online,
    /// A usage report file (`importUsageReport`).
    #[sea_orm(string_value = "USAGE_REPORT")]
    UsageReport,
    /// The ledger in a deactivation file.
    #[sea_orm(string_value = "DEACTIVATION")]
    Deactivation,
    /// A staff correction (`adjustUsage`).
    #[sea_orm(string_value = "ADJUSTMENT")]
    Adjustment,
}

/// Whether staff looked at an anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AnomalyStatus {
    /// Not yet acknowledged.
    #[sea_orm(string_value = "OPEN")]
    Open,
    /// Acknowledged by staff.
    #[sea_orm(string_value = "ACKNOWLEDGED")]
    Acknowledged,
}

/// What an alert to staff is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertKind {
    /// A device stopped heartbeating.
    #[sea_orm(string_value = "DEVICE_DEAD")]
    DeviceDead,
    /// A license's seats are all taken.
    #[sea_orm(string_value = "ACTIVATION_LIMIT_REACHED")]
    ActivationLimitReached,
    /// An anomaly was detected.
    #[sea_orm(string_value = "ANOMALY")]
    Anomaly,
    /// A billing subscription changed a license.
    #[sea_orm(string_value = "SUBSCRIPTION_CHANGED")]
    SubscriptionChanged,
    /// A license expires soon.
    #[sea_orm(string_value = "LICENSE_EXPIRING")]
    LicenseExpiring,
    /// An email could not be delivered.
    #[sea_orm(string_value = "EMAIL_FAILED")]
    EmailFailed,
    /// Billing reconciliation found a disagreement for staff.
    #[sea_orm(string_value = "BILLING_DRIFT")]
    BillingDrift,
    /// A webhook delivery was retried for its whole window and given up on.
    #[sea_orm(string_value = "WEBHOOK_FAILED")]
    WebhookFailed,
}

/// Where a webhook delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WebhookDeliveryStatus {
    /// Not yet acknowledged by a 2xx; retried until its window closes.
    #[sea_orm(string_value = "PENDING")]
    Pending,
    /// The endpoint answered 2xx.
    #[sea_orm(string_value = "DELIVERED")]
    Delivered,
    /// Retried for the whole window without a 2xx (a WEBHOOK_FAILED alert says so).
    #[sea_orm(string_value = "FAILED")]
    Failed,
}

/// A billing subscription's status, as the billing system (Stripe) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BillingStatus {
    /// In a free trial.
    #[sea_orm(string_value = "TRIALING")]
    Trialing,
    /// Paid up.
    #[sea_orm(string_value = "ACTIVE")]
    Active,
    /// The latest payment failed; the billing system is retrying.
    #[sea_orm(string_value = "PAST_DUE")]
    PastDue,
    /// Retries ran out; invoices stay open.
    #[sea_orm(string_value = "UNPAID")]
    Unpaid,
    /// Ended.
    #[sea_orm(string_value = "CANCELED")]
    Canceled,
    /// The first payment has not succeeded yet.
    #[sea_orm(string_value = "INCOMPLETE")]
    Incomplete,
    /// The first payment never succeeded.
    #[sea_orm(string_value = "INCOMPLETE_EXPIRED")]
    IncompleteExpired,
    /// A trial ended without a payment method.
    #[sea_orm(string_value = "PAUSED")]
    Paused,
    /// A status this version does not know (kept raw in `status_raw`).
    #[sea_orm(string_value = "UNKNOWN")]
    Unknown,
}

/// A disagreement between the billing system and the licenses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(40))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BillingDriftKind {
    /// A license was in force while its subscription had ended (healed by suspending it).
    #[sea_orm(string_value = "LICENSE_ACTIVE_SUBSCRIPTION_ENDED")]
    LicenseActiveSubscriptionEnded,
    /// A license was suspended while its subscription is paid.
    #[sea_orm(string_value = "SUSPENDED_WHILE_PAID")]
    SuspendedWhilePaid,
    /// A license's expiry was not its subscription's period end plus grace.
    #[sea_orm(string_value = "EXPIRY_MISMATCH")]
    ExpiryMismatch,
    /// A paying subscription no license follows.
    #[sea_orm(string_value = "SUBSCRIPTION_WITHOUT_LICENSE")]
    SubscriptionWithoutLicense,
    /// A subscription-backed license with no subscription, or one the billing system does not have.
    #[sea_orm(string_value = "LICENSE_WITHOUT_SUBSCRIPTION")]
    LicenseWithoutSubscription,
    /// The license's customer is not the subscription's customer.
    #[sea_orm(string_value = "CUSTOMER_MISMATCH")]
    CustomerMismatch,
    /// The subscription has a status this version does not know, so nothing was changed.
    #[sea_orm(string_value = "UNKNOWN_STATUS")]
    UnknownStatus,
}

/// Delivery state of an outbox email.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EmailStatus {
    /// Waiting to be sent (or retried).
    #[sea_orm(string_value = "PENDING")]
    Pending,
    /// Accepted by the mail transport.
    #[sea_orm(string_value = "SENT")]
    Sent,
    /// Given up on.
    #[sea_orm(string_value = "DEAD")]
    Dead,
}
