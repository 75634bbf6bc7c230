//! Who is calling: the vendor they act for, their role, and what each role may do.

use entity::enums::Role;
use sea_orm::ActiveEnum;

use crate::{Error, Result};

/// How the caller authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActorKind {
    /// A staff user with a session JWT.
    Staff {
        /// The staff user.
        user_id: String,
        /// The session (the JWT's `jti`).
        session_id: String,
    },
    /// An API token.
    Token {
        /// The token's id.
        token_id: String,
    },
    /// A device, with the token `activateDevice` returned.
    Device {
        /// The device.
        device_id: String,
        /// Its license.
        license_id: String,
    },
    /// Whoever holds a license key (`activateDevice`, `validateLicense`): may read that
    /// license and its devices, nothing else.
    Licensee {
        /// The license.
        license_id: String,
    },
    /// The system itself (first start, workers, command line).
    System,
}

/// An authenticated caller, always scoped to one vendor.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The vendor every read and write is scoped to.
    pub vendor_id: String,
    /// The caller's role.
    pub role: Role,
    /// How the caller authenticated.
    pub kind: ActorKind,
    /// A readable name for the audit log (an email or a token name).
    pub label: String,
    /// The HTTP request this call belongs to, for the audit log.
    pub request_id: Option<String>,
}

/// Something a caller may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Read anything of the vendor's.
    Read,
    /// See license keys in full.
    RevealLicenseKeys,
    /// Create products and policies.
    ManageCatalog,
    /// Upsert customers; issue, update, renew and revoke licenses.
    ManageLicenses,
    /// Suspend and reinstate licenses, release devices, acknowledge alerts.
    Support,
    /// Judge consumption: acknowledge anomalies and correct usage (people, not integrations).
    ReviewUsage,
    /// Create and revoke API tokens and staff users.
    ManageAccess,
    /// Change vendor settings and rotate signing keys.
    ManageVendor,
    /// Create, change and delete webhook endpoints; redeliver webhooks.
    ManageWebhooks,
    /// Read the webhook delivery log (integrations watch their own feed).
    ReadWebhookDeliveries,
}

/// Whether `role` has `capability`. This table is the whole authorisation policy.
#[must_use]
pub fn allows(role: Role, capability: Capability) -> bool {
    use Capability as C;
    use Role as R;
    match capability {
        C::Read => true,
        C::RevealLicenseKeys => matches!(role, R::Owner | R::Admin | R::Support),
        C::ManageCatalog | C::ManageLicenses => matches!(role, R::Owner | R::Admin | R::Integration),
        C::Support => matches!(role, R::Owner | R::Admin | R::Support | R::Integration),
        C::ReviewUsage => matches!(role, R::Owner | R::Admin | R::Support),
        C::ManageAccess | C::ManageVendor | C::ManageWebhooks => matches!(role, R::Owner | R::Admin),
        C::ReadWebhookDeliveries => matches!(role, R::Owner | R::Admin | R::Integration),
    }
}

/// Whether a caller with role `granter` may hand out role `granted` (to a token or a user):
/// owners grant anything, admins anything but owner, nobody else grants.
#[must_use]
pub fn can_grant(granter: Role, granted: Role) -> bool {
    match granter {
        Role::Owner => true,
        Role::Admin => granted != Role::Owner,
        Role::Support | Role::Integration | Role::ReadOnly => false,
    }
}

impl Actor {
    /// The system acting for a vendor (first start, command line, workers).
    #[must_use]
    pub fn system(vendor_id: &str) -> Self {
        Self {
            vendor_id: vendor_id.to_owned(),
            role: Role::Owner,
            kind: ActorKind::System,
            label: "system".into(),
            request_id: None,
        }
    }

    /// Fails with [`Error::Forbidden`] unless the caller's role has `capability`.
    ///
    /// # Errors
    /// [`Error::Forbidden`].
    pub fn require(&self, capability: Capability) -> Result<()> {
        if matches!(self.kind, ActorKind::Device { .. } | ActorKind::Licensee { .. }) {
            return Err(Error::Forbidden(
                "a device or license key can only use the device API".into(),
            ));
        }
        if allows(self.role, capability) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "the {} role may not do this",
                self.role.to_value()
            )))
        }
    }

    /// Whether the caller may do `capability`.
    #[must_use]
    pub fn can(&self, capability: Capability) -> bool {
        self.require(capability).is_ok()
    }

    /// The calling device's `(device id, license id)`.
    ///
    /// # Errors
    /// [`Error::Forbidden`] unless the caller authenticated with a device token.
    pub fn device(&self) -> Result<(&str, &str)> {
        match &self.kind {
            ActorKind::Device { device_id, license_id } => Ok((device_id, license_id)),
            _ => Err(Error::Forbidden(
                "send the device token that activateDevice returned".into(),
            )),
        }
    }

    /// The staff user or API token acting, as an acknowledgement records it (`None` for
    /// devices, licensees and the system).
    #[must_use]
    pub fn staff_id(&self) -> Option<&str> {
        match &self.kind {
            ActorKind::Staff { user_id, .. } => Some(user_id),
            ActorKind::Token { token_id } => Some(token_id),
            _ => None,
        }
    }

    /// `(kind, id)` of the actor as stored in the audit log.
    #[must_use]
    pub fn audit_identity(&self) -> (&'static str, Option<&str>) {
        match &self.kind {
            ActorKind::Staff { user_id, .. } => ("staff", Some(user_id)),
            ActorKind::Token { token_id } => ("token", Some(token_id)),
            ActorKind::Device { device_id, .. } => ("device", Some(device_id)),
            ActorKind::Licensee { license_id } => ("licensee", Some(license_id)),
            ActorKind::System => ("system", None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_reads_and_nothing_else() {
        for cap in [
            Capability::RevealLicenseKeys,
            Capability::ManageCatalog,
            Capability::ManageLicenses,
            Capability::Support,
            Capability::ReviewUsage,
            Capability::ManageAccess,
            Capability::ManageVendor,
            Capability::ManageWebhooks,
            Capability::ReadWebhookDeliveries,
        ] {
            assert!(!allows(Role::ReadOnly, cap), "{cap:?}");
        }
        assert!(allows(Role::ReadOnly, Capability::Read));
    }

    #[test]
    fn integration_cannot_touch_access_or_settings() {
        assert!(allows(Role::Integration, Capability::ManageLicenses));
        assert!(!allows(Role::Integration, Capability::ManageAccess));
        assert!(!allows(Role::Integration, Capability::ManageVendor));
        assert!(!allows(Role::Integration, Capability::ManageWebhooks));
        assert!(allows(Role::Integration, Capability::ReadWebhookDeliveries));
        assert!(!allows(Role::Support, Capability::ReadWebhookDeliveries));
        assert!(!allows(Role::Integration, Capability::ReviewUsage));
        assert!(!allows(Role::Integration, Capability::RevealLicenseKeys));
    }

    #[test]
    fn nobody_grants_above_themselves() {
        assert!(can_grant(Role::Owner, Role::Owner));
        assert!(!can_grant(Role::Admin, Role::Owner));
        assert!(can_grant(Role::Admin, Role::Admin));
        assert!(!can_grant(Role::Support, Role::ReadOnly));
        assert!(!can_grant(Role::Integration, Role::Integration));
    }
}
