//! The end-to-end harness: starts the real `licensing-api` binary on a free loopback port
//! against a fresh SQLite file or a fresh PostgreSQL database, and talks to it over HTTP like
//! any client would. PostgreSQL comes from `LICENSING_TEST_PG_URL` (an admin URL of a server
//! that `scripts/test.sh` starts); every test creates its own database on it.
//!
//! One concern per module; everything is re-exported here, so tests write `tests::X`.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness: a failure should stop the test loudly"
)]

mod billing;
mod client;
mod fixtures;
mod localstripe;
mod redis;
mod server;
mod smtp;
mod stripe_double;
mod subscriber;
mod wait;
mod webhook_receiver;
mod worker;

pub use billing::{
    BillingFixture, DAY, WEBHOOK_SECRET, billing_server, billing_server_with, expires, license_state, license_until,
    of_kind, sync_billing, synced, unix,
};
pub use client::{ClientMachine, ClientRun};
pub use fixtures::{
    ACTIVATE, Seeded, activate, activation_request, active_devices, api_token, components, deactivation_file,
    license_with_policy, product_and_policy, seed, usage_report_file, verify_license_file,
};
pub use localstripe::{LocalStripe, STRIPE_TEST_KEY};
pub use redis::RedisServer;
pub use server::{Backend, TEST_SECRET, TestServer, bin_dir, binary, error_code, free_port, test_tool};
pub use smtp::{SmtpSink, parse_email};
pub use stripe_double::{
    STRIPE_API_VERSION, StripeDouble, invoice_event, stripe_signature, stripe_signature_hex, stripe_signature_many,
    stripe_signature_v0, subscription_event,
};
pub use subscriber::AlertSubscriber;
pub use wait::eventually;
pub use webhook_receiver::WebhookReceiver;
pub use worker::{WorkerProcess, two_more_runs, worker_on, worker_queue, worker_runs};

/// Runs one async test body against both databases, as two `#[test]`s.
#[macro_export]
macro_rules! on_both_databases {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body($crate::Backend::Postgres).await;
            }
        }
    };
}
