//! The end-to-end tests in one binary, one module per area (linking one test binary instead
//! of eight keeps a harness change quick to rebuild). `workers.rs` stays a binary of its own.

mod access;
mod attacks;
mod audit;
mod auth_faults;
mod billing_localstripe;
mod billing_reconcile;
mod billing_webhooks;
mod client;
mod console;
mod device_lifecycle;
mod device_reactivation;
mod device_scope;
mod devices;
mod faults;
mod fuzz;
mod heartbeats;
mod licenses;
mod limits;
mod offline;
mod payloads;
mod processes;
mod read_model;
mod tenancy;
mod trusted_documents;
mod usage;
mod webhooks;
