//! Changing a staff user's role or disabling them ([`Domain::update_staff_user`]): OWNER and
//! ADMIN only, never above the caller's own role, never the vendor's last enabled OWNER, never
//! the caller themselves. The tokens a user created follow at once (`token_chain` caps them at
//! the user's current role and refuses them while the user is disabled); disabling also ends
//! the user's sessions.

use entity::enums::Role;
use entity::{staff_session, staff_user};
use sea_orm::{
    ActiveEnum, ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::json;

use crate::actor::can_grant;
use crate::audit::{self, Change};
use crate::db::begin_write;
use crate::{Actor, ActorKind, Capability, Domain, Error, Result};

/// What to change; `None` leaves it as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct StaffUserUpdate {
    /// The new role (never above the caller's).
    pub role: Option<Role>,
    /// Disable (`true`) or enable again (`false`).
    pub disabled: Option<bool>,
}

fn user_json(user: &staff_user::Model) -> serde_json::Value {
    json!({ "role": user.role.to_value(), "disabled": user.disabled_at.is_some() })
}

impl Domain {
    /// Changes a staff user's role or disables (enables) them, audited as `staff_user.update`.
    /// Disabling ends the user's sessions; the user's API tokens stop working while the user
    /// is disabled and act at most at the user's role.
    ///
    /// # Errors
    /// [`Error::Forbidden`] below ADMIN, for a user or a role above the caller's;
    /// [`Error::NotFound`] for another vendor's user; [`Error::InvalidInput`] for a change to
    /// the caller themselves or one that leaves the vendor without an enabled OWNER.
    pub async fn update_staff_user(
        &self,
        actor: &Actor,
        user_id: &str,
        update: StaffUserUpdate,
    ) -> Result<staff_user::Model> {
        actor.require(Capability::ManageAccess)?;
        if let Some(role) = update.role
            && !can_grant(actor.role, role)
        {
            return Err(Error::Forbidden(format!(
                "a {} may not make a user {}",
                actor.role.to_value(),
                role.to_value()
            )));
        }
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        // The enabled owners, locked first (in id order): two owners demoting each other at
        // once cannot both succeed.
        let owners = staff_user::Entity::find()
            .filter(staff_user::Column::VendorId.eq(&actor.vendor_id))
            .filter(staff_user::Column::Role.eq(Role::Owner))
            .filter(staff_user::Column::DisabledAt.is_null())
            .order_by_asc(staff_user::Column::Id)
            .lock_exclusive()
            .all(&tx)
            .await?;
        let user = staff_user::Entity::find_by_id(user_id)
            .filter(staff_user::Column::VendorId.eq(&actor.vendor_id))
            .one(&tx)
            .await?
            .ok_or(Error::NotFound("staff user"))?;
        if !can_grant(actor.role, user.role) {
            return Err(Error::Forbidden(format!(
                "a {} may not change a {} user",
                actor.role.to_value(),
                user.role.to_value()
            )));
        }
        let role = update.role.unwrap_or(user.role);
        let disabled = update.disabled.unwrap_or(user.disabled_at.is_some());
        if role == user.role && disabled == user.disabled_at.is_some() {
            return Ok(user);
        }
        if matches!(&actor.kind, ActorKind::Staff { user_id, .. } if *user_id == user.id) {
            return Err(Error::InvalidInput(
                "you may not change your own role or disable yourself: ask another OWNER or ADMIN".into(),
            ));
        }
        let enabled_owner = user.role == Role::Owner && user.disabled_at.is_none();
        if enabled_owner && (role != Role::Owner || disabled) && owners.iter().all(|o| o.id == user.id) {
            return Err(Error::InvalidInput(
                "this is the vendor's last enabled OWNER: make another user OWNER first".into(),
            ));
        }
        let before = user_json(&user);
        let disabled_at = if disabled { user.disabled_at.or(Some(now)) } else { None };
        let mut model: staff_user::ActiveModel = user.into();
        model.role = Set(role);
        model.disabled_at = Set(disabled_at);
        model.updated_at = Set(now);
        let user = model.update(&tx).await?;
        if disabled {
            staff_session::Entity::update_many()
                .col_expr(staff_session::Column::RevokedAt, Some(now).into())
                .filter(staff_session::Column::StaffUserId.eq(&user.id))
                .filter(staff_session::Column::RevokedAt.is_null())
                .exec(&tx)
                .await?;
        }
        audit::record(
            &tx,
            actor,
            now,
            Change::new("staff_user.update", "staff_user", &user.id, before, user_json(&user)),
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    }
}
