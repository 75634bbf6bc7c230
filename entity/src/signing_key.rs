//! `signing_keys`: A vendor's Ed25519 signing key; the private half is encrypted with the master secret.

use sea_orm::entity::prelude::*;

/// A vendor's Ed25519 signing key; the private half is encrypted with the master secret.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "signing_keys")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub vendor_id: String,
    /// Key id written into license files.
    pub kid: String,
    pub algorithm: String,
    /// SubjectPublicKeyInfo PEM.
    pub public_key_pem: String,
    /// PKCS#8 DER, encrypted (nonce + ciphertext, base64).
    pub private_key_enc: String,
    /// The key that signs new files; one per vendor.
    pub active: bool,
    pub created_at: DateTimeUtc,
    pub retired_at: Option<DateTimeUtc>,
}

/// Tables this one points to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
