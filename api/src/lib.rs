//! The licensing API server: the actix-web app, the GraphQL schema, authentication, request
//! limits and metrics. `main.rs` wires them into the `licensing-api` binary.

pub mod assets;
pub mod auth;
pub mod config;
pub mod graphql;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod pages;
pub mod proxies;
pub mod stripe_webhook;
pub mod ws;
