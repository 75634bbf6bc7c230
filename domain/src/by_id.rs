//! Batched reads by id, for the API's DataLoaders: one query for a whole page's relations,
//! scoped to the caller's vendor, so a foreign id is simply absent.
//!
//! A device token or a license-key holder (the scope of `activateDevice` and
//! `validateLicense` results) reads even less: its own license, that license's policy and
//! product, and (a device) its own device. Customers and every other row are absent to it, as
//! a foreign id is: `License.customer` answers null and `product(id:)` of another product
//! finds nothing.

use sea_orm::sea_query::{Query, SimpleExpr};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::{Actor, ActorKind, Domain, Result};

/// A table whose rows belong to a vendor and are keyed by a text id.
pub trait VendorRows: EntityTrait {
    /// The `vendor_id` column.
    const VENDOR_ID: Self::Column;
    /// The primary key column.
    const ID: Self::Column;
    /// A row's id.
    fn id(row: &Self::Model) -> &str;
    /// The rows of this table the holder of license `license_id` (and device `device_id`,
    /// for a device token) may read; `None`: none at all.
    fn licensee_rows(license_id: &str, device_id: Option<&str>) -> Option<SimpleExpr>;
}

macro_rules! vendor_rows {
    ($($table:ident),+) => {$(
        impl VendorRows for $table::Entity {
            const VENDOR_ID: Self::Column = $table::Column::VendorId;
            const ID: Self::Column = $table::Column::Id;
            fn id(row: &Self::Model) -> &str {
                &row.id
            }
            fn licensee_rows(license_id: &str, device_id: Option<&str>) -> Option<SimpleExpr> {
                $table::licensee_rows(license_id, device_id)
            }
        }
    )+};
}

vendor_rows!(product, policy, customer, license, device);

/// The id of the license's row in `column` (its policy or its product), as a subquery.
fn of_license(column: license::Column, license_id: &str) -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .column(column)
        .from(license::Entity)
        .and_where(license::Column::Id.eq(license_id))
        .to_owned()
}

mod product {
    pub use entity::product::*;
    use sea_orm::ColumnTrait;
    use sea_orm::sea_query::SimpleExpr;

    pub fn licensee_rows(license_id: &str, _: Option<&str>) -> Option<SimpleExpr> {
        Some(Column::Id.in_subquery(super::of_license(entity::license::Column::ProductId, license_id)))
    }
}

mod policy {
    pub use entity::policy::*;
    use sea_orm::ColumnTrait;
    use sea_orm::sea_query::SimpleExpr;

    pub fn licensee_rows(license_id: &str, _: Option<&str>) -> Option<SimpleExpr> {
        Some(Column::Id.in_subquery(super::of_license(entity::license::Column::PolicyId, license_id)))
    }
}

mod customer {
    pub use entity::customer::*;
    use sea_orm::sea_query::SimpleExpr;

    /// The customer's name, email and ids are personal data: never shown to a device.
    pub fn licensee_rows(_: &str, _: Option<&str>) -> Option<SimpleExpr> {
        None
    }
}

mod license {
    pub use entity::license::*;
    use sea_orm::ColumnTrait;
    use sea_orm::sea_query::SimpleExpr;

    pub fn licensee_rows(license_id: &str, _: Option<&str>) -> Option<SimpleExpr> {
        Some(Column::Id.eq(license_id))
    }
}

mod device {
    pub use entity::device::*;
    use sea_orm::ColumnTrait;
    use sea_orm::sea_query::ExprTrait as _;
    use sea_orm::sea_query::SimpleExpr;

    /// A device reads itself; a license-key holder no device by id (the one it validated is
    /// handed to it directly).
    pub fn licensee_rows(license_id: &str, device_id: Option<&str>) -> Option<SimpleExpr> {
        device_id.map(|id| Column::Id.eq(id).and(Column::LicenseId.eq(license_id)))
    }
}

impl Domain {
    /// The caller's vendor's rows of table `E` with these ids (for a device or a license-key
    /// holder, only those of its own license: see the module doc).
    ///
    /// # Errors
    /// Database errors.
    pub async fn rows_by_ids<E: VendorRows>(&self, actor: &Actor, ids: &[String]) -> Result<Vec<E::Model>> {
        let mut select = E::find()
            .filter(E::VENDOR_ID.eq(&actor.vendor_id))
            .filter(E::ID.is_in(ids.iter().map(String::as_str)));
        let own = match &actor.kind {
            ActorKind::Device { device_id, license_id } => Some(E::licensee_rows(license_id, Some(device_id))),
            ActorKind::Licensee { license_id } => Some(E::licensee_rows(license_id, None)),
            ActorKind::Staff { .. } | ActorKind::Token { .. } | ActorKind::System => None,
        };
        match own {
            Some(None) => return Ok(Vec::new()),
            Some(Some(condition)) => select = select.filter(condition),
            None => {}
        }
        Ok(select.all(&self.db).await?)
    }
}
