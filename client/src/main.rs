//! `licensing-client`: the command line over the client library, for the vendor's shipped
//! software (or its installer) to activate, validate offline, heartbeat, record usage and give
//! the seat back, online or through files.
//!
//! Exit status: 0 on success (for `status`: the license is valid), 1 when `status` finds the
//! license not valid, 2 when the operation failed (the message on stderr says why).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use client::{Client, ClientError, Options, Status};

#[derive(Parser)]
#[command(
    name = "licensing-client",
    version,
    about = "Activate, validate and deactivate this machine's license"
)]
struct Cli {
    /// Where the license file, device key and usage ledger are kept (created with owner-only
    /// permissions).
    #[arg(long, global = true, env = "LICENSING_STATE", default_value = ".licensing")]
    state: PathBuf,
    /// The vendor's public key(s): SubjectPublicKeyInfo PEM, as `signingKeys { publicKeyPem }`
    /// lists them (several blocks to accept files of rotated keys).
    #[arg(long, global = true, env = "LICENSING_PUBLIC_KEY")]
    public_key: Option<PathBuf>,
    /// Fingerprint components to use instead of detecting them: `name=value,name=value`.
    #[arg(long, global = true)]
    components: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Activate online and install the license file.
    Activate {
        /// Server base URL (`http://127.0.0.1:8080`).
        #[arg(long)]
        server: String,
        /// License key.
        #[arg(long)]
        key: String,
    },
    /// Write an activation request file for the vendor's offline portal.
    Request {
        /// License key.
        #[arg(long)]
        key: String,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Install a license or refresh file (checked: vendor signature, this machine, not older).
    Install {
        /// The license file.
        file: PathBuf,
    },
    /// Validate the installed license offline; exit 0 only when valid.
    Status {
        /// Print JSON (`valid`, `code`, `detail`, ...).
        #[arg(long)]
        json: bool,
        /// An entitlement the software needs (repeatable).
        #[arg(long = "entitlement")]
        entitlements: Vec<String>,
    },
    /// Heartbeat to the server; fetch and install a newer license file when there is one.
    Heartbeat,
    /// Record usage of a meter in the local ledger.
    Use {
        /// Meter code.
        meter: String,
        /// Amount, at least 1.
        amount: i64,
    },
    /// Write a usage report of the records the server has not acknowledged.
    UsageReport {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check the device out for off-network use.
    CheckOut {
        /// How long, in seconds.
        #[arg(long)]
        ttl: i64,
    },
    /// Return a check-out early.
    CheckIn,
    /// Give the seat back: online, or with `--out` as a deactivation file for the vendor.
    Deactivate {
        /// Write a deactivation file (carrying unreported usage) instead of calling the server.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print this machine's fingerprint components and fingerprint.
    Components,
}

fn parse_components(text: &str) -> Result<protocol::fingerprint::Components, ClientError> {
    let pairs: Vec<(&str, &str)> = text
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            pair.split_once('=')
                .ok_or_else(|| ClientError::Refused(format!("--components: {pair:?} is not name=value")))
        })
        .collect::<Result<_, _>>()?;
    protocol::fingerprint::components(pairs).map_err(|e| ClientError::Refused(format!("--components: {e}")))
}

fn read(path: &PathBuf) -> Result<String, ClientError> {
    std::fs::read_to_string(path).map_err(|e| ClientError::Refused(format!("{}: {e}", path.display())))
}

fn write(path: &PathBuf, text: &str) -> Result<(), ClientError> {
    std::fs::write(path, text).map_err(|e| ClientError::Refused(format!("{}: {e}", path.display())))
}

fn print_status(status: &Status) {
    println!("{:?}: {}", status.code, status.detail);
    if let Some(id) = &status.license_id {
        println!("  license {id}, device {}", status.device_id.as_deref().unwrap_or("-"));
    }
    if let Some(version) = status.version {
        let expires = status.expires_at.map_or("never".to_owned(), |at| at.to_rfc3339());
        println!("  version {version}, expires {expires}");
    }
    if !status.entitlements.is_empty() {
        println!("  entitlements: {}", status.entitlements.join(", "));
    }
}

fn run(cli: Cli) -> Result<ExitCode, ClientError> {
    let vendor_keys = match &cli.public_key {
        Some(path) => client::vendor_keys(&read(path)?)?,
        None => Vec::new(),
    };
    let components = cli.components.as_deref().map(parse_components).transpose()?;
    let clock_offset = std::env::var("LICENSING_CLIENT_CLOCK_OFFSET_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(chrono::Duration::try_seconds)
        .unwrap_or_default();
    let client = Client::open(
        &cli.state,
        Options {
            vendor_keys,
            components,
            clock_offset,
        },
    )?;
    match cli.command {
        Command::Activate { server, key } => print_status(&client.activate(&server, &key)?),
        Command::Request { key, out } => {
            write(&out, &client.request(&key)?)?;
            println!("activation request written to {}: send it to the vendor", out.display());
        }
        Command::Install { file } => {
            let status = client.install(&read(&file)?)?;
            println!("installed {}", file.display());
            print_status(&status);
        }
        Command::Status { json, entitlements } => {
            let status = client.status(&entitlements)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).map_err(|e| ClientError::State(e.to_string()))?
                );
            } else {
                print_status(&status);
            }
            return Ok(if status.valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Command::Heartbeat => {
            let report = client.heartbeat()?;
            let next = report
                .next_heartbeat_due_at
                .map_or("not required".to_owned(), |at| at.to_rfc3339());
            println!(
                "heartbeat accepted; license version {}{}; next heartbeat due {next}",
                report.license_version,
                if report.refreshed {
                    ", new license file installed"
                } else {
                    ""
                }
            );
        }
        Command::Use { meter, amount } => {
            let record = client.record_use(&meter, amount)?;
            println!(
                "recorded {} {} (ledger record {})",
                record.quantity, record.meter, record.seq
            );
        }
        Command::UsageReport { out } => {
            write(&out, &client.usage_report()?)?;
            println!("usage report written to {}: send it to the vendor", out.display());
        }
        Command::CheckOut { ttl } => print_status(&client.check_out(ttl)?),
        Command::CheckIn => print_status(&client.check_in()?),
        Command::Deactivate { out: Some(out) } => {
            client.deactivate_offline(&out)?;
            println!(
                "deactivation file written to {}: send it to the vendor; this device no longer validates",
                out.display()
            );
        }
        Command::Deactivate { out: None } => {
            client.deactivate_online()?;
            println!("deactivated: the seat is free; this device no longer validates");
        }
        Command::Components => {
            for (name, value) in client.components() {
                println!("{name}={value}");
            }
            println!(
                "fingerprint {}",
                protocol::fingerprint::fingerprint(client.components())
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("licensing-client: {e}");
            ExitCode::from(2)
        }
    }
}
