//! What an API token may do now: its own role, capped by whoever created it, computed at
//! every authentication (nothing is rewritten when a creator changes).
//!
//! - A token created by a staff user works at most at that user's current role, and stops
//!   working while the user is disabled (or once the user is gone).
//! - A token created by a token is capped by the creating token's current effective role,
//!   the same rule applied up the chain: it stops working when any token above it is revoked
//!   or expired, or the staff user at the top is disabled. A chain is at most
//!   [`MAX_TOKEN_CHAIN`] tokens long.
//! - A token created by the system (the first OWNER token, `create-vendor`) keeps its role.
//!
//! Roles are capped by [`role_meet`]: the most the two roles both allow.

use chrono::{DateTime, Utc};
use entity::enums::Role;
use entity::{api_token, staff_user};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::{Actor, ActorKind, Domain, Error, Result};

/// Longest chain of tokens (a token created by a token created by ...) that authenticates.
pub const MAX_TOKEN_CHAIN: usize = 8;

/// How high a role stands: OWNER above ADMIN above SUPPORT and INTEGRATION (side by side)
/// above READ_ONLY.
fn rank(role: Role) -> u8 {
    match role {
        Role::Owner => 3,
        Role::Admin => 2,
        Role::Support | Role::Integration => 1,
        Role::ReadOnly => 0,
    }
}

/// The highest role whose every capability both `a` and `b` have: the lower of the two, or
/// READ_ONLY for SUPPORT and INTEGRATION (neither allows all the other does).
#[must_use]
pub fn role_meet(a: Role, b: Role) -> Role {
    if a == b {
        a
    } else if rank(a) == rank(b) {
        Role::ReadOnly
    } else if rank(a) < rank(b) {
        a
    } else {
        b
    }
}

/// A token's standing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Standing {
    /// The role it acts with.
    pub(crate) role: Role,
    /// Tokens in its chain, itself included.
    pub(crate) depth: usize,
}

/// Who created a link of the chain.
enum By {
    Staff,
    Token,
    System,
}

impl Domain {
    /// The standing of a token that is itself valid (not revoked, not expired): `None` when
    /// its chain no longer lets it work.
    ///
    /// # Errors
    /// Database errors.
    pub(crate) async fn token_standing(
        &self,
        token: &api_token::Model,
        now: DateTime<Utc>,
    ) -> Result<Option<Standing>> {
        let mut role = token.role;
        let (mut kind, mut id) = (token.created_by_kind.clone(), token.created_by_id.clone());
        for depth in 1..=MAX_TOKEN_CHAIN {
            let by = match kind.as_str() {
                "staff" => By::Staff,
                "token" => By::Token,
                "system" => By::System,
                // Nothing else creates tokens: an unknown creator fails closed.
                _ => return Ok(None),
            };
            match (by, id) {
                (By::Staff, Some(user_id)) => {
                    let user = staff_user::Entity::find_by_id(user_id)
                        .filter(staff_user::Column::VendorId.eq(&token.vendor_id))
                        .one(&self.db)
                        .await?;
                    return Ok(user.filter(|u| u.disabled_at.is_none()).map(|u| Standing {
                        role: role_meet(role, u.role),
                        depth,
                    }));
                }
                (By::Token, Some(token_id)) => {
                    let Some(parent) = api_token::Entity::find_by_id(token_id)
                        .filter(api_token::Column::VendorId.eq(&token.vendor_id))
                        .one(&self.db)
                        .await?
                    else {
                        return Ok(None);
                    };
                    if parent.revoked_at.is_some() || parent.expires_at.is_some_and(|at| at <= now) {
                        return Ok(None);
                    }
                    role = role_meet(role, parent.role);
                    (kind, id) = (parent.created_by_kind, parent.created_by_id);
                }
                (By::Staff | By::Token, None) => return Ok(None),
                (By::System, _) => return Ok(Some(Standing { role, depth })),
            }
        }
        Ok(None)
    }
}

impl Domain {
    /// Refuses a token creating a token past the end of its chain (one that would never
    /// authenticate).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] at the end of the chain.
    pub(crate) async fn require_room_in_chain(&self, actor: &Actor, now: DateTime<Utc>) -> Result<()> {
        let ActorKind::Token { token_id } = &actor.kind else {
            return Ok(());
        };
        let Some(token) = api_token::Entity::find_by_id(token_id).one(&self.db).await? else {
            return Err(Error::Unauthenticated(
                "the API token is invalid, expired or revoked".into(),
            ));
        };
        match self.token_standing(&token, now).await? {
            Some(standing) if standing.depth < MAX_TOKEN_CHAIN => Ok(()),
            Some(_) => Err(Error::InvalidInput(format!(
                "this token ends a chain of {MAX_TOKEN_CHAIN} tokens creating tokens: create the token as staff"
            ))),
            None => Err(Error::Unauthenticated("the API token no longer works".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meet_never_exceeds_either_role() {
        let all = [
            Role::Owner,
            Role::Admin,
            Role::Support,
            Role::Integration,
            Role::ReadOnly,
        ];
        for a in all {
            for b in all {
                let meet = role_meet(a, b);
                assert_eq!(meet, role_meet(b, a));
                for cap in [
                    crate::Capability::Read,
                    crate::Capability::RevealLicenseKeys,
                    crate::Capability::ManageCatalog,
                    crate::Capability::ManageLicenses,
                    crate::Capability::Support,
                    crate::Capability::ReviewUsage,
                    crate::Capability::ManageAccess,
                    crate::Capability::ManageVendor,
                ] {
                    if crate::actor::allows(meet, cap) {
                        assert!(
                            crate::actor::allows(a, cap) && crate::actor::allows(b, cap),
                            "{a:?} {b:?} {cap:?}"
                        );
                    }
                }
            }
        }
        assert_eq!(role_meet(Role::Owner, Role::Admin), Role::Admin);
        assert_eq!(role_meet(Role::Support, Role::Integration), Role::ReadOnly);
        assert_eq!(role_meet(Role::Admin, Role::Integration), Role::Integration);
    }
}
