//! A1 (`validateLicense`, key + fingerprint), A2 (`heartbeat`, device token) and M1 (the API's
//! peak RSS under them) against the real `licensing-api` on SQLite, anchored on a bare
//! actix-web POST endpoint that parses and returns small JSON, measured in the same run: the
//! anchor, A1 and A2 interleaved `reps` times after a warm-up, the median of each reported with
//! how busy the server core was at the least.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::fleet;
use crate::harness::{
    Load, Server, drive, drive_measured, launch_api, least_percent, median, report, rotating, spawn_pinned,
};

/// Serves the bare actix-web anchor on `addr` (the bench's hidden `--anchor` mode).
pub fn anchor_server(addr: &str) -> anyhow::Result<()> {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let addr = addr.to_owned();
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(|| {
            App::new().route(
                "/json",
                web::post().to(|body: web::Json<Value>| async move {
                    HttpResponse::Ok().json(json!({ "valid": body.get("licenseKey").is_some(), "code": "VALID" }))
                }),
            )
        })
        .workers(1)
        .bind(addr)?
        .run()
        .await
    })?;
    Ok(())
}

/// Runs A1, A2 and M1 and prints their lines.
pub async fn run(
    bin_dir: &Path,
    licenses: usize,
    connections: usize,
    duration: Duration,
    reps: usize,
) -> anyhow::Result<()> {
    let anchor_port = crate::harness::free_port()?;
    let anchor_addr = format!("127.0.0.1:{anchor_port}");
    let anchor = Server {
        child: spawn_pinned(&std::env::current_exe()?, &["--anchor", &anchor_addr], &[])?,
        dir: None,
    };
    crate::harness::wait_for_port(anchor_port).await?;
    let dir = tempfile::tempdir()?;
    let (mut api, api_port, token) = launch_api(bin_dir, dir.path(), "embedded", &[]).await?;
    api.dir = Some(dir);
    let fleet = fleet::seed(api_port, &token, licenses).await?;
    let anchor_load = Load {
        port: anchor_port,
        path: "/json",
        request: rotating(
            fleet
                .devices
                .iter()
                .map(|d| {
                    let body = json!({ "licenseKey": &*d.key, "fingerprint": d.fingerprint });
                    (Bytes::from(serde_json::to_vec(&body).unwrap_or_default()), None)
                })
                .collect(),
        ),
        check: |v| v["valid"] == true,
    };
    let a1 = Load {
        port: api_port,
        path: "/graphql",
        request: rotating(fleet.validations()),
        check: |v| v["data"]["validateLicense"]["valid"] == true,
    };
    let a2 = Load {
        port: api_port,
        path: "/graphql",
        request: rotating(fleet.heartbeats()?),
        check: |v| v["data"]["heartbeat"]["updateAvailable"] == false,
    };
    for load in [&anchor_load, &a1, &a2] {
        drive(load, connections, Duration::from_millis(500)).await?;
    }
    let mut rates = [Vec::new(), Vec::new(), Vec::new()];
    let mut busy = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..reps {
        for (i, (load, pid)) in [(&anchor_load, anchor.pid()), (&a1, api.pid()), (&a2, api.pid())]
            .into_iter()
            .enumerate()
        {
            let (rate, core) = drive_measured(load, &[pid], connections, duration).await?;
            rates[i].push(rate);
            busy[i].push(core);
        }
    }
    let [anchor_rates, a1_rates, a2_rates] = rates;
    let anchor_rate = median(anchor_rates);
    let note = |ours: &[f64]| {
        format!(
            " [median of {reps} interleaved; server core busy: anchor >= {:.0}%, ours >= {:.0}%; {} devices]",
            least_percent(&busy[0]),
            least_percent(ours),
            fleet.devices.len()
        )
    };
    report("A1", median(a1_rates), anchor_rate, 0.15, &note(&busy[1]));
    report("A2", median(a2_rates), anchor_rate, 0.15, &note(&busy[2]));
    let rss = crate::harness::peak_rss_mib(api.pid());
    println!(
        "M1 peak RSS of licensing-api under A1/A2 = {rss:.1} MiB (bar <= 64) {}",
        if rss <= 64.0 { "PASS" } else { "FAIL" }
    );
    Ok(())
}
