//! ASCII armour: standard base64 of a UTF-8 document, wrapped at 64 columns between
//! `-----BEGIN <LABEL>-----` and `-----END <LABEL>-----` lines.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Width of one base64 line inside the armour.
const LINE_WIDTH: usize = 64;

/// Why an armoured text could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArmourError {
    /// The `BEGIN` line for the expected label is missing.
    #[error("the text does not start with -----BEGIN {0}-----")]
    MissingBegin(String),
    /// The `END` line for the expected label is missing.
    #[error("the text does not end with -----END {0}-----")]
    MissingEnd(String),
    /// The body is not standard base64.
    #[error("the body is not valid base64")]
    Base64,
}

/// Wraps `body` in armour with the given label (for example `LICENSE FILE`).
#[must_use]
pub fn encode(label: &str, body: &[u8]) -> String {
    let b64 = STANDARD.encode(body);
    let mut out = String::with_capacity(b64.len() + b64.len() / LINE_WIDTH + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(LINE_WIDTH) {
        // base64 output is ASCII, so every chunk boundary is a char boundary.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Reads armour with the given label and returns the decoded body. Surrounding whitespace and
/// CRLF line endings are accepted; anything else outside the armour is refused.
///
/// # Errors
/// [`ArmourError`] when a marker line is missing or the body is not base64.
pub fn decode(label: &str, text: &str) -> Result<Vec<u8>, ArmourError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let text = text.trim();
    let rest = text
        .strip_prefix(begin.as_str())
        .ok_or_else(|| ArmourError::MissingBegin(label.to_owned()))?;
    let body = rest
        .strip_suffix(end.as_str())
        .ok_or_else(|| ArmourError::MissingEnd(label.to_owned()))?;
    // Line by line (a copy per line, not a test per byte): this is on the client's offline check.
    let mut compact = Vec::with_capacity(body.len());
    for piece in body.split_ascii_whitespace() {
        compact.extend_from_slice(piece.as_bytes());
    }
    STANDARD.decode(compact).map_err(|_| ArmourError::Base64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wraps_at_64_columns() {
        let text = encode("LICENSE FILE", &[7u8; 100]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "-----BEGIN LICENSE FILE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last().copied(), Some("-----END LICENSE FILE-----"));
    }

    #[test]
    fn refuses_wrong_label_and_bad_base64() {
        let text = encode("LICENSE FILE", b"{}");
        assert_eq!(
            decode("USAGE REPORT", &text),
            Err(ArmourError::MissingBegin("USAGE REPORT".into()))
        );
        let broken = "-----BEGIN LICENSE FILE-----\n***\n-----END LICENSE FILE-----";
        assert_eq!(decode("LICENSE FILE", broken), Err(ArmourError::Base64));
    }

    proptest! {
        #[test]
        fn round_trips(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let text = encode("DEACTIVATION FILE", &body);
            prop_assert_eq!(decode("DEACTIVATION FILE", &text.replace('\n', "\r\n")), Ok(body));
        }

        #[test]
        fn never_panics_on_any_text(text in ".{0,512}") {
            let _ = decode("LICENSE FILE", &text);
        }
    }
}
