//! GraphQL enums mirroring the stored ones (`entity::enums`), with conversions both ways.

use async_graphql::Enum;

/// A staff user's or token's role.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::enums::Role")]
pub enum Role {
    /// Everything.
    Owner,
    /// Everything but creating owners.
    Admin,
    /// Read; suspend, reinstate, release; acknowledge.
    Support,
    /// ERP/CRM integrations: catalog, customers, licenses.
    Integration,
    /// Read only.
    ReadOnly,
}

/// Where a device may run.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::enums::DeploymentMode")]
pub enum DeploymentMode {
    /// Online activation and validation.
    Online,
    /// Activation by files only.
    Offline,
    /// Either.
    Hybrid,
}

/// When a meter starts again from zero.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::enums::ResetPeriod")]
pub enum ResetPeriod {
    /// Never.
    Never,
    /// Every UTC day.
    Daily,
    /// Every ISO week.
    Weekly,
    /// Every calendar month.
    Monthly,
    /// Every calendar year.
    Yearly,
}

/// What a dead device's seat does.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::enums::DeadDeviceAction")]
pub enum DeadDeviceAction {
    /// The seat is freed.
    ReleaseSeat,
    /// The seat stays taken.
    KeepSeat,
}

/// A license's state.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::enums::LicenseStatus")]
pub enum LicenseStatus {
    /// In force.
    Active,
    /// Paused; can be reinstated.
    Suspended,
    /// Ended for good.
    Revoked,
    /// Past its expiry.
    Expired,
}

/// How a caller authenticated.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ActorKind {
    /// A staff user's session.
    Staff,
    /// An API token.
    ApiToken,
    /// A device (device token or license key).
    Device,
    /// The system itself.
    System,
}
