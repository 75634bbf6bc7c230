//! What the licensing client and server must agree on, with no IO and no clock (every
//! function that needs "now" takes it as an argument).
//!
//! - [`armour`]: the ASCII armour around every file;
//! - [`envelope`]: the signed JSON envelope inside every file;
//! - [`signing`]: vendor Ed25519 keys, their PEM and key ids;
//! - [`license_file`]: the signed license file (also the refresh and check-out file);
//! - [`offline`]: the files a device writes: activation request, deactivation file, usage report;
//! - [`fingerprint`]: fingerprints derived from machine components, and k-of-n matching;
//! - [`ledger`]: the signed, hash-chained offline usage ledger and its checks;
//! - [`validation`]: the validation codes and the offline rules a client applies to a file;
//! - [`trusted_documents`]: the GraphQL documents devices send by id.

pub mod armour;
pub mod envelope;
pub mod fingerprint;
pub mod ledger;
pub mod license_file;
pub mod offline;
pub mod signing;
pub mod trusted_documents;
pub mod validation;
