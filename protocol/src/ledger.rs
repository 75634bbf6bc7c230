//! The offline usage ledger a device keeps: an append-only chain of records, each naming the
//! hash of the one before it (the first names a genesis hash bound to the device) and signed by
//! the device's Ed25519 key. The server acknowledges a position (`seq`, `hash`) in every
//! license file it signs (`usage_ack`); checking a ledger against that position tells a normal
//! continuation from a restored old copy (rollback), a copy that diverged on a second machine
//! (fork), records cut out (gap), and a clock moved backwards.
//!
//! A record's hash is the hex SHA-256 of the lines `v1`, device id, seq, meter, quantity,
//! `recorded_at` (RFC 3339, microseconds), prev hash, joined by `\n`; its signature is the
//! Ed25519 signature over the 32 hash bytes, base64url without padding.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::license_file::UsageAck;

/// Largest quantity one record may carry (readers refuse more, so totals never overflow).
pub const MAX_QUANTITY: i64 = 1_000_000_000;

/// One consumption record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRecord {
    /// Position in the ledger, from 1, without gaps.
    pub seq: u64,
    /// Meter code.
    pub meter: String,
    /// Amount used, at least 1.
    pub quantity: i64,
    /// The device's clock when it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Hash of the previous record (the genesis hash for the first).
    pub prev_hash: String,
    /// Hash of this record.
    pub hash: String,
    /// The device's signature over the hash.
    pub sig: String,
}

/// What is wrong with a ledger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerProblem {
    /// A record's fields do not hash to its hash: it was edited.
    #[error("record {seq} was altered after it was written")]
    Tampered {
        /// The record.
        seq: u64,
    },
    /// A record is not signed by this device.
    #[error("record {seq} is not signed by this device")]
    BadSignature {
        /// The record.
        seq: u64,
    },
    /// Records are missing between two positions (a truncated or edited ledger).
    #[error("records between {after} and {next} are missing")]
    Gap {
        /// Last position before the hole.
        after: u64,
        /// First position after it.
        next: u64,
    },
    /// The ledger ends before the position the server already acknowledged: an older copy
    /// was restored.
    #[error(
        "the ledger ends at record {last} but record {acknowledged} was already acknowledged: an older copy was restored"
    )]
    Rollback {
        /// Acknowledged position.
        acknowledged: u64,
        /// Last position in the ledger.
        last: u64,
    },
    /// At a position the server acknowledged, this ledger holds a different record: a copy
    /// diverged (e.g. the ledger was copied to a second machine).
    #[error("record {seq} differs from the one acknowledged: the ledger was forked")]
    Fork {
        /// The diverging position.
        seq: u64,
    },
    /// A record is dated before the one it follows.
    #[error("record {seq} is dated before the record it follows: the clock was moved backwards")]
    ClockBackwards {
        /// The record.
        seq: u64,
    },
}

/// The genesis hash of a device's ledger (what its first record names as previous).
#[must_use]
pub fn genesis_hash(device_id: &str) -> String {
    hex::encode(Sha256::digest(format!("licensing/ledger/v1\n{device_id}").as_bytes()))
}

fn record_hash(device_id: &str, seq: u64, meter: &str, quantity: i64, at: DateTime<Utc>, prev: &str) -> [u8; 32] {
    let at = at.to_rfc3339_opts(SecondsFormat::Micros, true);
    Sha256::digest(format!("v1\n{device_id}\n{seq}\n{meter}\n{quantity}\n{at}\n{prev}").as_bytes()).into()
}

/// Appends a record after `last` (or as the first), signed by the device key. `now` is the
/// device's clock; it is truncated to microseconds, as it is hashed.
#[must_use]
pub fn append(
    device_id: &str,
    key: &SigningKey,
    last: Option<&LedgerRecord>,
    meter: &str,
    quantity: i64,
    now: DateTime<Utc>,
) -> LedgerRecord {
    let seq = last.map_or(1, |r| r.seq.saturating_add(1));
    let prev_hash = last.map_or_else(|| genesis_hash(device_id), |r| r.hash.clone());
    let recorded_at = chrono::SubsecRound::trunc_subsecs(now, 6);
    let hash = record_hash(device_id, seq, meter, quantity, recorded_at, &prev_hash);
    LedgerRecord {
        seq,
        meter: meter.to_owned(),
        quantity,
        recorded_at,
        prev_hash,
        hash: hex::encode(hash),
        sig: URL_SAFE_NO_PAD.encode(key.sign(&hash).to_bytes()),
    }
}

/// The outcome of checking a ledger against the acknowledged position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainCheck {
    /// Records after the acknowledged position, in order: what is new to the server.
    pub new_records: Vec<LedgerRecord>,
    /// Records at or before the acknowledged position (already counted).
    pub already_acknowledged: usize,
}

/// How the records' own signatures are checked.
#[derive(Debug, Clone, Copy)]
pub enum RecordSignatures<'a> {
    /// Each record's signature is verified with the device key.
    Verify(&'a VerifyingKey),
    /// The records came inside a device file whose signature, by the same device key, was
    /// verified and covers every byte of them (an import of a usage report or deactivation
    /// file): one signature check for the file instead of one per record. Hashes and links are
    /// still checked.
    CoveredByFile,
}

/// Checks `records` (a contiguous run of the ledger, oldest first) against the position the
/// server acknowledged (`None` = nothing yet): every hash, signature, link and date, and how
/// the run relates to the acknowledged position.
///
/// # Errors
/// The first [`LedgerProblem`] found.
pub fn verify_chain(
    device_id: &str,
    signatures: RecordSignatures<'_>,
    acknowledged: Option<&UsageAck>,
    records: &[LedgerRecord],
) -> Result<ChainCheck, LedgerProblem> {
    let mut previous: Option<&LedgerRecord> = None;
    for record in records {
        let seq = record.seq;
        let hash = record_hash(
            device_id,
            seq,
            &record.meter,
            record.quantity,
            record.recorded_at,
            &record.prev_hash,
        );
        if hex::encode(hash) != record.hash {
            return Err(LedgerProblem::Tampered { seq });
        }
        if let RecordSignatures::Verify(key) = signatures {
            let signature = URL_SAFE_NO_PAD
                .decode(&record.sig)
                .ok()
                .and_then(|raw| Signature::from_slice(&raw).ok());
            if signature.is_none_or(|sig| key.verify_strict(&hash, &sig).is_err()) {
                return Err(LedgerProblem::BadSignature { seq });
            }
        }
        if let Some(prev) = previous {
            if Some(seq) != prev.seq.checked_add(1) {
                return Err(LedgerProblem::Gap {
                    after: prev.seq,
                    next: seq,
                });
            }
            if record.prev_hash != prev.hash {
                return Err(LedgerProblem::Fork { seq });
            }
            if record.recorded_at < prev.recorded_at {
                return Err(LedgerProblem::ClockBackwards { seq });
            }
        }
        previous = Some(record);
    }
    let (ack_seq, ack_hash) = acknowledged.map_or_else(|| (0, genesis_hash(device_id)), |a| (a.seq, a.hash.clone()));
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok(ChainCheck {
            new_records: Vec::new(),
            already_acknowledged: 0,
        });
    };
    if first.seq > ack_seq.saturating_add(1) {
        return Err(LedgerProblem::Gap {
            after: ack_seq,
            next: first.seq,
        });
    }
    if last.seq < ack_seq {
        return Err(LedgerProblem::Rollback {
            acknowledged: ack_seq,
            last: last.seq,
        });
    }
    // The record at the acknowledged position (or the one right after it) must continue the
    // acknowledged chain.
    let continues = if first.seq == ack_seq.saturating_add(1) {
        first.prev_hash == ack_hash
    } else {
        records
            .iter()
            .find(|r| r.seq == ack_seq)
            .is_some_and(|r| r.hash == ack_hash)
    };
    if !continues {
        return Err(LedgerProblem::Fork {
            seq: ack_seq.max(first.seq),
        });
    }
    let new_records: Vec<LedgerRecord> = records.iter().filter(|r| r.seq > ack_seq).cloned().collect();
    Ok(ChainCheck {
        already_acknowledged: records.len() - new_records.len(),
        new_records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::signing_key_from_seed;
    use chrono::Duration;
    use proptest::prelude::*;

    fn ledger(key: &SigningKey, n: u64, start: DateTime<Utc>) -> Vec<LedgerRecord> {
        let mut out: Vec<LedgerRecord> = Vec::new();
        for i in 0..n {
            let r = append(
                "dev",
                key,
                out.last(),
                "calls",
                1 + i as i64,
                start + Duration::minutes(i as i64),
            );
            out.push(r);
        }
        out
    }

    fn ack(r: &LedgerRecord) -> UsageAck {
        UsageAck {
            seq: r.seq,
            hash: r.hash.clone(),
        }
    }

    #[test]
    fn a_continuation_is_accepted_and_split_at_the_ack() {
        let key = signing_key_from_seed(&[3; 32]);
        let public = key.verifying_key();
        let records = ledger(&key, 5, Utc::now());
        let all = verify_chain("dev", RecordSignatures::Verify(&public), None, &records).map(|c| c.new_records.len());
        assert_eq!(all, Ok(5));
        let check = verify_chain(
            "dev",
            RecordSignatures::Verify(&public),
            Some(&ack(&records[1])),
            &records,
        );
        assert_eq!(
            check.map(|c| (c.already_acknowledged, c.new_records[0].seq)),
            Ok((2, 3))
        );
        let tail = verify_chain(
            "dev",
            RecordSignatures::Verify(&public),
            Some(&ack(&records[1])),
            &records[2..],
        );
        assert_eq!(tail.map(|c| c.new_records.len()), Ok(3));
        assert_eq!(
            verify_chain("other-device", RecordSignatures::Verify(&public), None, &records),
            Err(LedgerProblem::Tampered { seq: 1 })
        );
    }

    #[test]
    fn rollback_fork_gap_clock_and_edits_are_told_apart() {
        let key = signing_key_from_seed(&[3; 32]);
        let public = key.verifying_key();
        let now = Utc::now();
        let records = ledger(&key, 6, now);
        // An old copy restored after the server acknowledged record 5.
        assert_eq!(
            verify_chain(
                "dev",
                RecordSignatures::Verify(&public),
                Some(&ack(&records[4])),
                &records[..3]
            ),
            Err(LedgerProblem::Rollback {
                acknowledged: 5,
                last: 3
            })
        );
        // A second machine continued the same copy differently after record 3.
        let mut forked = records[..3].to_vec();
        forked.push(append(
            "dev",
            &key,
            forked.last(),
            "calls",
            99,
            now + Duration::hours(1),
        ));
        assert_eq!(
            verify_chain(
                "dev",
                RecordSignatures::Verify(&public),
                Some(&ack(&records[3])),
                &forked
            ),
            Err(LedgerProblem::Fork { seq: 4 })
        );
        // Records cut out.
        let mut cut = records.clone();
        cut.remove(2);
        assert_eq!(
            verify_chain("dev", RecordSignatures::Verify(&public), None, &cut),
            Err(LedgerProblem::Gap { after: 2, next: 4 })
        );
        assert_eq!(
            verify_chain(
                "dev",
                RecordSignatures::Verify(&public),
                Some(&ack(&records[0])),
                &records[3..]
            ),
            Err(LedgerProblem::Gap { after: 1, next: 4 })
        );
        // An edited quantity, and a record signed by another key.
        let mut edited = records.clone();
        edited[1].quantity = 1_000;
        assert_eq!(
            verify_chain("dev", RecordSignatures::Verify(&public), None, &edited),
            Err(LedgerProblem::Tampered { seq: 2 })
        );
        let other = signing_key_from_seed(&[4; 32]);
        let mut foreign = records[..2].to_vec();
        foreign.push(append(
            "dev",
            &other,
            foreign.last(),
            "calls",
            1,
            now + Duration::hours(2),
        ));
        assert_eq!(
            verify_chain("dev", RecordSignatures::Verify(&public), None, &foreign),
            Err(LedgerProblem::BadSignature { seq: 3 })
        );
        // Inside a file the device signed, the file's signature stands for the records': an
        // edit is still caught by the hashes.
        assert_eq!(
            verify_chain("dev", RecordSignatures::CoveredByFile, None, &edited),
            Err(LedgerProblem::Tampered { seq: 2 })
        );
        assert!(verify_chain("dev", RecordSignatures::CoveredByFile, None, &foreign).is_ok());
        // The clock moved backwards between two records.
        let mut back = records[..2].to_vec();
        back.push(append("dev", &key, back.last(), "calls", 1, now - Duration::days(1)));
        assert_eq!(
            verify_chain("dev", RecordSignatures::Verify(&public), None, &back),
            Err(LedgerProblem::ClockBackwards { seq: 3 })
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_hostile_records(seq in any::<u64>(), quantity in any::<i64>(), text in ".{0,40}") {
            let key = signing_key_from_seed(&[3; 32]);
            let record = LedgerRecord {
                seq,
                meter: text.clone(),
                quantity,
                recorded_at: Utc::now(),
                prev_hash: text.clone(),
                hash: text.clone(),
                sig: text,
            };
            let ack = UsageAck { seq, hash: "x".into() };
            let _ = verify_chain("dev", RecordSignatures::Verify(&key.verifying_key()), Some(&ack), &[record.clone(), record]);
        }
    }
}
