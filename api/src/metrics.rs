//! Prometheus metrics of the API process, served at `/metrics`.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

/// The process's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route and status.
    pub http_requests: IntCounterVec,
    /// HTTP request latency by route.
    pub http_latency: HistogramVec,
    /// GraphQL errors by code.
    pub graphql_errors: IntCounterVec,
    /// Requests naming a trusted document, by how they were answered (`direct` or `executor`).
    pub trusted_documents: IntCounterVec,
}

impl Metrics {
    /// Registers the metrics.
    ///
    /// # Errors
    /// A prometheus error if a metric is registered twice.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("licensing".into()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )?;
        let http_latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by route").buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["route"],
        )?;
        let graphql_errors =
            IntCounterVec::new(Opts::new("graphql_errors_total", "GraphQL errors by code"), &["code"])?;
        let trusted_documents = IntCounterVec::new(
            Opts::new(
                "graphql_trusted_documents_total",
                "Requests naming a trusted document by documentId, by how they were answered",
            ),
            &["path"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_latency.clone()))?;
        registry.register(Box::new(graphql_errors.clone()))?;
        registry.register(Box::new(trusted_documents.clone()))?;
        Ok(Self {
            registry,
            http_requests,
            http_latency,
            graphql_errors,
            trusted_documents,
        })
    }

    /// The metrics in Prometheus text format.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if TextEncoder::new().encode(&self.registry.gather(), &mut out).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
