//! `licensing-worker`: runs the job workers (heartbeat sweep, renewal notices, alert digests,
//! email delivery) against the same database and queue as the API, until SIGTERM or Ctrl-C.

use tracing_subscriber::EnvFilter;

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing in-flight jobs");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    domain::settings::restrict_new_files();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")))
        .with_writer(std::io::stderr)
        .init();
    let settings = domain::settings::Settings::from_env()?;
    let config = worker::WorkerConfig::from_env(&settings)?;
    let domain = settings.open_domain().await?;
    if let Some(url) = &config.redis_url {
        worker::read_model_feed::start(domain.clone(), url.clone());
    }
    tracing::info!(
        queue = if config.redis_url.is_some() { "redis" } else { "sqlite" },
        mail = if config.smtp_url.is_some() { "smtp" } else { "files" },
        "licensing-worker started"
    );
    worker::run(domain, config, worker::WorkerHealth::default(), shutdown_signal()).await
}
