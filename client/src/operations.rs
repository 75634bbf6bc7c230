//! The GraphQL operations the client sends, one document each in `protocol/graphql/` (the trusted documents), typed at
//! compile time against the committed `schema.graphql`: a document that selects a field the
//! schema no longer has, or a variable of the wrong type, does not compile, and an answer of
//! another shape is an error rather than a silent null.

use graphql_client::GraphQLQuery;

/// The schema's `DateTime` scalar (RFC 3339).
type DateTime = chrono::DateTime<chrono::Utc>;
/// The schema's `JSON` scalar.
#[expect(clippy::upper_case_acronyms, reason = "the generated code names the schema's scalar")]
type JSON = serde_json::Value;

/// `activateDevice`: a license key and this machine in, a device token and license file out.
#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "../schema.graphql",
    query_path = "../protocol/graphql/activate_device.graphql",
    skip_serializing_none,
    response_derives = "Debug"
)]
pub struct ActivateDevice;

/// `fetchLicenseFile`: a fresh license file for the calling device.
#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "../schema.graphql",
    query_path = "../protocol/graphql/fetch_license_file.graphql",
    response_derives = "Debug"
)]
pub struct FetchLicenseFile;

/// `heartbeat`: the calling device is alive; whether its license changed since its file.
#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "../schema.graphql",
    query_path = "../protocol/graphql/heartbeat.graphql",
    response_derives = "Debug"
)]
pub struct Heartbeat;

/// `checkOutDevice`: a check-out file for off-network use.
#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "../schema.graphql",
    query_path = "../protocol/graphql/check_out_device.graphql",
    response_derives = "Debug"
)]
pub struct CheckOutDevice;

/// `checkInDevice`: ends a check-out early.
#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "../schema.graphql",
    query_path = "../protocol/graphql/check_in_device.graphql",
    response_derives = "Debug"
)]
pub struct CheckInDevice;

/// `deactivateDevice`: gives the calling device's seat back.
#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "../schema.graphql",
    query_path = "../protocol/graphql/deactivate_device.graphql",
    response_derives = "Debug"
)]
pub struct DeactivateDevice;

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]
mod tests {
    use graphql_client::QueryBody;
    use serde::Serialize;
    use serde_json::json;

    use super::*;

    /// The body as sent, with the document's whitespace collapsed.
    fn sent<V: Serialize>(body: &QueryBody<V>) -> (String, serde_json::Value) {
        let query: Vec<&str> = body.query.split_whitespace().collect();
        (query.join(" "), serde_json::to_value(&body.variables).unwrap())
    }

    #[test]
    fn the_documents_are_the_ones_the_client_always_sent() {
        let expected = [
            (
                sent(&FetchLicenseFile::build_query(fetch_license_file::Variables)).0,
                "mutation FetchLicenseFile { fetchLicenseFile }",
            ),
            (
                sent(&Heartbeat::build_query(heartbeat::Variables)).0,
                "mutation Heartbeat { heartbeat { updateAvailable nextHeartbeatDueAt licenseVersion } }",
            ),
            (
                sent(&CheckInDevice::build_query(check_in_device::Variables)).0,
                "mutation CheckInDevice { checkInDevice { id } }",
            ),
            (
                sent(&DeactivateDevice::build_query(deactivate_device::Variables)).0,
                "mutation DeactivateDevice { deactivateDevice { id } }",
            ),
        ];
        for (query, document) in expected {
            assert_eq!(query, document);
        }
    }

    #[test]
    fn activation_sends_the_input_it_always_sent() {
        let input = activate_device::ActivateDeviceInput {
            license_key: "LK-1".into(),
            fingerprint: "fp".into(),
            components: Some(vec![activate_device::ComponentInput {
                name: "cpu".into(),
                value: "x".into(),
            }]),
            name: None,
            hostname: Some("host".into()),
            platform: Some("linux-x86_64".into()),
            device_public_key: Some("pk".into()),
            variables: None,
            key_proof: None,
        };
        let body = ActivateDevice::build_query(activate_device::Variables { input });
        let (query, variables) = sent(&body);
        assert_eq!(
            query,
            "mutation ActivateDevice($input: ActivateDeviceInput!) { activateDevice(input: $input) { deviceToken licenseFile } }"
        );
        assert_eq!(
            variables,
            json!({ "input": {
                "licenseKey": "LK-1",
                "fingerprint": "fp",
                "components": [{ "name": "cpu", "value": "x" }],
                "hostname": "host",
                "platform": "linux-x86_64",
                "devicePublicKey": "pk",
            }})
        );
    }
}
