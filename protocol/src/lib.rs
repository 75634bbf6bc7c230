//! What the licensing client and server must agree on, with no IO and no clock (every
//! function that needs "now" takes it as an argument).
//!
//! - [`armour`]: the ASCII armour around every file;
//! - [`signing`]: vendor Ed25519 keys, their PEM and key ids;
//! - [`license_file`]: the signed license file (also the refresh and check-out file);
//! - [`fingerprint`]: fingerprints derived from machine components, and k-of-n matching;
//! - [`validation`]: the validation codes and the offline rules a client applies to a file.

pub mod armour;
pub mod fingerprint;
pub mod license_file;
pub mod signing;
pub mod validation;
