//! Batched reads by id, for the API's DataLoaders: one query for a whole page's relations,
//! scoped to the caller's vendor, so a foreign id is simply absent.

use entity::{customer, device, license, policy, product};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::{Actor, Domain, Result};

/// A table whose rows belong to a vendor and are keyed by a text id.
pub trait VendorRows: EntityTrait {
    /// The `vendor_id` column.
    const VENDOR_ID: Self::Column;
    /// The primary key column.
    const ID: Self::Column;
    /// A row's id.
    fn id(row: &Self::Model) -> &str;
}

macro_rules! vendor_rows {
    ($($table:ident),+) => {$(
        impl VendorRows for $table::Entity {
            const VENDOR_ID: Self::Column = $table::Column::VendorId;
            const ID: Self::Column = $table::Column::Id;
            fn id(row: &Self::Model) -> &str {
                &row.id
            }
        }
    )+};
}

vendor_rows!(product, policy, customer, license, device);

impl Domain {
    /// The caller's vendor's rows of table `E` with these ids.
    ///
    /// # Errors
    /// Database errors.
    pub async fn rows_by_ids<E: VendorRows>(&self, actor: &Actor, ids: &[String]) -> Result<Vec<E::Model>> {
        Ok(E::find()
            .filter(E::VENDOR_ID.eq(&actor.vendor_id))
            .filter(E::ID.is_in(ids.iter().map(String::as_str)))
            .all(&self.db)
            .await?)
    }
}
