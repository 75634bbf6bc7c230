//! What the licensing client and server must agree on, with no IO and no clock.
//!
//! Today this is the ASCII armour every licensing file uses and the vendor's Ed25519 signing
//! keys (generation from caller-supplied randomness, PEM export of the public half). License
//! files, activation requests, fingerprints and the usage ledger build on these.

pub mod armour;
pub mod signing;
