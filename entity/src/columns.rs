//! The typed JSON columns: each is read back into its Rust type by sea-orm
//! (`FromJsonQueryResult`), so a corrupt row fails the query that reads it, loudly, instead of
//! turning into an empty list.

use std::collections::BTreeMap;

use sea_orm::FromJsonQueryResult;
use serde::{Deserialize, Serialize};

use crate::enums::ResetPeriod;

/// A JSON array of strings: entitlement codes, alert email addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, FromJsonQueryResult)]
#[serde(transparent)]
pub struct StringList(pub Vec<String>);

/// A device's fingerprint components by name (a JSON object), as it activated with them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, FromJsonQueryResult)]
#[serde(transparent)]
pub struct ComponentMap(pub BTreeMap<String, String>);

/// A consumption meter of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    /// Meter code (`api-calls`).
    pub code: String,
    /// Allowed use per period; `None` = unlimited.
    pub limit: Option<i64>,
    /// When usage starts again from zero.
    pub reset_period: ResetPeriod,
    /// Use allowed beyond `limit` before recording is refused.
    pub overage_limit: i64,
}

/// A policy's meters (a JSON array).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, FromJsonQueryResult)]
#[serde(transparent)]
pub struct MeterList(pub Vec<Meter>);

/// A file attached to an email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// File name shown to the recipient.
    pub filename: String,
    /// MIME type.
    pub content_type: String,
    /// The content (text).
    pub content: String,
}

/// An email's attachments (a JSON array).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, FromJsonQueryResult)]
#[serde(transparent)]
pub struct AttachmentList(pub Vec<Attachment>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_shapes_are_unchanged() -> Result<(), serde_json::Error> {
        let meters = MeterList(vec![Meter {
            code: "api".into(),
            limit: Some(5),
            reset_period: ResetPeriod::Daily,
            overage_limit: 0,
        }]);
        assert_eq!(
            serde_json::to_value(&meters)?,
            serde_json::json!([{"code": "api", "limit": 5, "reset_period": "DAILY", "overage_limit": 0}])
        );
        assert_eq!(
            serde_json::to_value(StringList(vec!["pro".into()]))?,
            serde_json::json!(["pro"])
        );
        let components: ComponentMap = serde_json::from_value(serde_json::json!({"mac": "aa"}))?;
        assert_eq!(components.0.get("mac").map(String::as_str), Some("aa"));
        Ok(())
    }

    #[test]
    fn a_corrupt_value_is_an_error() {
        assert!(serde_json::from_value::<StringList>(serde_json::json!({"not": "a list"})).is_err());
        assert!(serde_json::from_value::<MeterList>(serde_json::json!([{"code": 1}])).is_err());
    }
}
