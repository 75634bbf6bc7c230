//! `licensing-api`: serves the GraphQL API, or creates a vendor and exits.

use actix_web::{App, HttpServer, middleware, web};
use anyhow::Context as _;
use api::config::{Config, write_private};
use api::http::{AppState, observe, routes};
use clap::{Parser, Subcommand};
use domain::Domain;
use tracing_subscriber::EnvFilter;

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
    // WORKERS=embedded: the job workers run in this process until the HTTP server stops.
    let (stop_workers, workers_stopped) = tokio::sync::oneshot::channel::<()>();
    let workers = if config.embedded_workers {
        let worker_config = worker::WorkerConfig::from_env(&config.settings)?;
        let domain = domain.clone();
        Some(tokio::spawn(async move {
            let shutdown = async move {
                let _ = workers_stopped.await;
            };
            if let Err(e) = worker::run(domain, worker_config, shutdown).await {
                tracing::error!(error = %e, "job workers stopped");
            }
        }))
    } else {
        None
    };
    let state = AppState {
        schemas: api::graphql::Schemas::new(&domain, config.production),
        domain,
        metrics: api::metrics::Metrics::new()?,
    };
    println!("GraphiQL: http://{}/graphql", config.listen_addr);
    tracing::info!(addr = %config.listen_addr, production = config.production, "listening");
    HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .wrap(middleware::from_fn(observe))
            .configure(routes)
    })
    .bind(&config.listen_addr)
    .with_context(|| format!("binding {}", config.listen_addr))?
    .shutdown_timeout(10)
    .run()
    .await?;
    let _ = stop_workers.send(());
    if let Some(workers) = workers {
        let _ = workers.await;
    }
    Ok(())
}
