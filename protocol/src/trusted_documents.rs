//! The GraphQL documents devices send, known to the server by id: the client sends
//! `{"documentId": "sha256:<hex>", ...}` instead of the text (the GraphQL-over-HTTP
//! trusted-documents convention), and the server runs its own parsed, validated copy. The id
//! is the SHA-256 of the document's exact text, so a document that changes gets a new id and
//! an old server simply does not know it (the client then sends the text).

use sha2::{Digest as _, Sha256};

/// A document known to both sides.
#[derive(Debug, Clone, Copy)]
pub struct TrustedDocument {
    /// The operation's name, as in the text.
    pub operation_name: &'static str,
    /// The exact text.
    pub text: &'static str,
}

/// `validateLicense` with the answer's three scalar fields: the document for software that
/// validates online on every start.
pub const VALIDATE_LICENSE: TrustedDocument = TrustedDocument {
    operation_name: "ValidateLicense",
    text: include_str!("../graphql/validate_license.graphql"),
};

/// `heartbeat`, as the client sends it.
pub const HEARTBEAT: TrustedDocument = TrustedDocument {
    operation_name: "Heartbeat",
    text: include_str!("../graphql/heartbeat.graphql"),
};

/// Every trusted document: the two hot ones and the rest of what the client sends.
pub const ALL: [TrustedDocument; 7] = [
    VALIDATE_LICENSE,
    HEARTBEAT,
    TrustedDocument {
        operation_name: "ActivateDevice",
        text: include_str!("../graphql/activate_device.graphql"),
    },
    TrustedDocument {
        operation_name: "FetchLicenseFile",
        text: include_str!("../graphql/fetch_license_file.graphql"),
    },
    TrustedDocument {
        operation_name: "CheckOutDevice",
        text: include_str!("../graphql/check_out_device.graphql"),
    },
    TrustedDocument {
        operation_name: "CheckInDevice",
        text: include_str!("../graphql/check_in_device.graphql"),
    },
    TrustedDocument {
        operation_name: "DeactivateDevice",
        text: include_str!("../graphql/deactivate_device.graphql"),
    },
];

impl TrustedDocument {
    /// The document's id: `sha256:` and the lower-case hex SHA-256 of its text.
    #[must_use]
    pub fn id(&self) -> String {
        document_id(self.text)
    }
}

/// The id of any document text (`sha256:<hex>`).
#[must_use]
pub fn document_id(text: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

/// The trusted document with exactly this text, if there is one.
#[must_use]
pub fn find_by_text(text: &str) -> Option<TrustedDocument> {
    ALL.into_iter().find(|document| document.text == text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_sha256_of_the_text_and_distinct() {
        assert_eq!(
            document_id(""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut ids: Vec<String> = ALL.iter().map(TrustedDocument::id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), ALL.len());
        for document in ALL {
            let named = format!("mutation {}", document.operation_name);
            let rest = document.text.strip_prefix(&named).unwrap_or_default();
            assert!(rest.starts_with([' ', '(']), "{}", document.operation_name);
        }
    }
}
