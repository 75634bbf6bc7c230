//! `licensing-api`: serves the GraphQL API, or creates a vendor and exits.

use actix_web::{App, HttpServer, middleware, web};
use anyhow::Context as _;
use api::config::{Config, write_private};
use api::http::{AppState, observe, routes};
use clap::{Parser, Subcommand};
use domain::Domain;
use tracing_subscriber::EnvFilter;
use worker::alert_feed::AlertFeed;

#[derive(Parser)]
#[command(name = "licensing-api", about = "The licensing GraphQL API server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Create a vendor and print {"vendor_id", "token"} (an OWNER API token).
    CreateVendor {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Unique short name (a-z, 0-9, -).
        #[arg(long)]
        slug: String,
        /// The owner's email (a staff user who sets a password later).
        #[arg(long)]
        owner_email: String,
    },
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    // Before anything creates a file: DATA_DIR, the databases, the secret, the owner token.
    domain::settings::restrict_new_files();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = Config::from_env()?;
    let domain = config.settings.open_domain().await?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::CreateVendor {
            name,
            slug,
            owner_email,
        } => {
            let created = domain.create_vendor(&name, &slug, &owner_email).await?;
            println!(
                "{}",
                serde_json::json!({ "vendor_id": created.vendor.id, "token": created.owner_token })
            );
            Ok(())
        }
        Command::Serve => serve(config, domain).await,
    }
}

async fn serve(config: Config, domain: Domain) -> anyhow::Result<()> {
    if domain.has_no_vendor().await? {
        let created = domain
            .create_vendor("Default vendor", "default", "owner@localhost")
            .await?;
        let path = config.settings.data_dir.join("owner-token");
        write_private(&path, &format!("{}\n", created.owner_token))?;
        println!(
            "Created vendor \"default\". Its OWNER API token (shown once, also in {}):",
            path.display()
        );
        println!("{}", created.owner_token);
    }
    let worker_config = if config.embedded_workers {
        Some(worker::WorkerConfig::from_env(&config.settings)?)
    } else {
        None
    };
    let workers = worker_config.as_ref().map(|_| worker::WorkerHealth::default());
    if let Some(url) = &config.redis_url {
        worker::read_model_feed::start(domain.clone(), url.clone());
    }
    let state = AppState {
        schemas: api::graphql::Schemas::new(
            &domain,
            &AlertFeed::start(domain.clone(), config.redis_url.clone()),
            config.production,
        ),
        domain: domain.clone(),
        metrics: api::metrics::Metrics::new()?,
        stripe_webhook_secret: config.stripe_webhook_secret.clone().map(std::sync::Arc::new),
        trusted_proxies: std::sync::Arc::new(config.trusted_proxies.clone()),
        sockets: api::ws::Sockets::default(),
        workers: workers.clone(),
    };
    let (stop_flusher, flusher_stopped) = tokio::sync::oneshot::channel::<()>();
    let flusher = tokio::spawn(flush_token_usage(
        domain.clone(),
        config.token_usage_flush,
        flusher_stopped,
    ));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .wrap(middleware::from_fn(observe))
            .configure(routes)
    })
    .bind(&config.listen_addr)
    .with_context(|| format!("binding {}", config.listen_addr))?
    .shutdown_timeout(10)
    .run();
    println!("GraphiQL: http://{}/graphql", config.listen_addr);
    println!("Staff console: http://{}/console", config.listen_addr);
    tracing::info!(addr = %config.listen_addr, production = config.production, "listening");
    let served = serve_with_workers(server, domain.clone(), worker_config, workers).await;
    // The flusher is stopped between writes, never in the middle of one, and writes once more.
    let _ = stop_flusher.send(());
    let _ = flusher.await;
    served
}

/// Writes API token last-use times every `period` (`TOKEN_USAGE_FLUSH_SECS`), and once more
/// when `stop` fires.
async fn flush_token_usage(domain: Domain, period: std::time::Duration, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = interval.tick() => false,
            _ = &mut stop => true,
        };
        if let Err(e) = domain.flush_token_usage().await {
            tracing::warn!(error = %e, stopping, "could not write API token last-use times");
        }
        if stopping {
            return;
        }
    }
}

/// Serves until the HTTP server stops. With `WORKERS=embedded` the job workers run in this
/// process meanwhile: when their queue is unreachable they start again with backoff and
/// `/readyz` says not ready, while the API goes on answering; only a configuration they
/// cannot run with (a bad SMTP_URL) stops the process.
async fn serve_with_workers(
    server: actix_web::dev::Server,
    domain: Domain,
    worker_config: Option<worker::WorkerConfig>,
    health: Option<worker::WorkerHealth>,
) -> anyhow::Result<()> {
    let (Some(worker_config), Some(health)) = (worker_config, health) else {
        return Ok(server.await?);
    };
    let (stop_workers, workers_stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = workers_stopped.await;
    };
    let mut workers = tokio::spawn(worker::run(domain, worker_config, health, shutdown));
    let handle = server.handle();
    let mut server = tokio::spawn(server);
    tokio::select! {
        served = &mut server => {
            let _ = stop_workers.send(());
            let _ = workers.await;
            served??;
        }
        stopped = &mut workers => {
            handle.stop(true).await;
            let _ = server.await;
            stopped?.context("the embedded job workers")?;
            anyhow::bail!("the embedded job workers stopped");
        }
    }
    Ok(())
}
