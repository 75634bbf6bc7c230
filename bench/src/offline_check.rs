//! C1: the client's offline check of a license file (parse the armour and envelope, pick the
//! key the file names, verify, parse the payload, apply the rules) against a raw Ed25519
//! verification of the same payload bytes, in this process on the load core.
//!
//! Both run in short alternating rounds (a round of raw checks, then a round of ours), and
//! the ratio of each pair of rounds is taken: noise from the shared machine hits both sides of
//! a pair alike, so the median of the per-round ratios is stable where one long run of each is
//! not.

use std::time::Instant;

use anyhow::bail;

/// Checks per round.
const ROUND: u32 = 500;

/// What C1 measured.
pub struct Measured {
    /// Our checks per second (median round).
    pub ours: f64,
    /// Raw verifications per second (median round).
    pub raw: f64,
    /// The median of the per-round ratios.
    pub ratio: f64,
    /// Rounds run.
    pub rounds: usize,
    /// How busy this process kept its core, at the least.
    pub busy: f64,
}

/// Runs `rounds` alternating rounds.
pub fn measure(rounds: usize) -> anyhow::Result<Measured> {
    use ed25519_dalek::Signer as _;
    let key = protocol::signing::signing_key_from_seed(&[7; 32]);
    let public = key.verifying_key();
    let now = chrono::Utc::now();
    let components =
        protocol::fingerprint::components([("mac", "aa:bb:cc"), ("cpu", "x86"), ("disk", "d1"), ("hostid", "h")])?;
    let payload = protocol::license_file::LicensePayload {
        format: protocol::license_file::FORMAT,
        license_id: "0000".into(),
        license_key_hint: "ABCD".into(),
        vendor: "bench".into(),
        product: "bench".into(),
        policy: "policy".into(),
        status: "ACTIVE".into(),
        entitlements: vec!["pro".into(), "sso".into()],
        meters: vec![],
        issued_at: now,
        expires_at: Some(now + chrono::Duration::days(30)),
        refresh_by: now + chrono::Duration::days(7),
        grace_seconds: 604_800,
        version: 3,
        server_time: now,
        device: protocol::license_file::DeviceBinding {
            id: "device".into(),
            fingerprint: protocol::fingerprint::fingerprint(&components),
            components: components.clone(),
        },
        min_component_matches: Some(3),
        heartbeat_interval_seconds: Some(3600),
        checked_out_until: None,
        usage_ack: None,
    };
    let kid = protocol::signing::key_id(&public);
    let file = protocol::license_file::sign(&payload, &kid, &key)?;
    // A vendor ships its current and previous key; the check picks the one the file names.
    let keys = [
        protocol::signing::signing_key_from_seed(&[8; 32]).verifying_key(),
        public,
    ];
    let bytes = serde_json::to_vec(&payload)?;
    let sig = key.sign(&bytes);
    let needed = vec!["pro".to_owned()];

    let per_second = |started: Instant| f64::from(ROUND) / started.elapsed().as_secs_f64();
    let (mut ours, mut raw, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let cpu = crate::harness::cpu_seconds(&[std::process::id()]);
    let started_all = Instant::now();
    for _ in 0..rounds {
        let started = Instant::now();
        for _ in 0..ROUND {
            public.verify_strict(std::hint::black_box(&bytes), &sig)?;
        }
        let raw_rate = per_second(started);
        let started = Instant::now();
        for _ in 0..ROUND {
            let status = client::check(std::hint::black_box(&file), &keys, &components, &needed, now, Some(now));
            if !status.valid {
                bail!("the bench file should validate: {}", status.detail);
            }
        }
        let ours_rate = per_second(started);
        ratios.push(ours_rate / raw_rate);
        raw.push(raw_rate);
        ours.push(ours_rate);
    }
    let busy = (crate::harness::cpu_seconds(&[std::process::id()]) - cpu) / started_all.elapsed().as_secs_f64();
    Ok(Measured {
        ours: crate::harness::median(ours),
        raw: crate::harness::median(raw),
        ratio: crate::harness::median(ratios),
        rounds,
        busy,
    })
}

/// Runs C1 and prints its line.
pub fn run(quick: bool) -> anyhow::Result<()> {
    let c1 = measure(if quick { 61 } else { 201 })?;
    println!(
        "C1 {:.0}/{:.0} = {:.3} (bar >= 0.8) {} [offline checks/s vs raw Ed25519 verify/s of the same bytes; median of {} interleaved rounds of {ROUND}; core busy {:.0}%]",
        c1.ours,
        c1.raw,
        c1.ratio,
        if c1.ratio >= 0.8 { "PASS" } else { "FAIL" },
        c1.rounds,
        c1.busy * 100.0
    );
    Ok(())
}
