//! What a device token (and the license-key holder reading an `activateDevice` or
//! `validateLicense` result) can read and do, end to end against the real binary:
//!
//! - a scope walk over every field reachable from `license` / `device`, built from the
//!   schema's introspection so a field added later is walked too: the license-file fields
//!   answer, everything else (the customer, metadata, billing, usage history, sibling devices)
//!   is null or FORBIDDEN, and none of the private values appears anywhere in the answer;
//! - every root query refuses a device token (foreign and own product/policy ids included).
//!
//! Re-activation, key proofs and the row cap are in `device_reactivation.rs`.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use tests::{Backend, TestServer, error_code, on_both_databases};

/// Values only staff may see; none may appear in anything a device reads.
const PRIVATE: [&str; 9] = [
    "person@acme.test",
    "Acme Person",
    "EXT-SECRET-1",
    "cus_billing_secret",
    "meta-marker-123",
    "sub_marker_456",
    "sibling-fp-789",
    "sib-comp-xyz",
    "sibling-var-000",
];

/// The fields of License a device reads (its license-file fields); any other field of License
/// (including one added later) must answer null or FORBIDDEN to a device.
const LICENSE_ALLOWED: [&str; 14] = [
    "id",
    "key",
    "status",
    "policy",
    "product",
    "devices",
    "usage",
    "issuedAt",
    "expiresAt",
    "maxActivations",
    "activeDevices",
    "entitlements",
    "version",
    "updatedAt",
];

/// The fields of its own Device a device reads.
const DEVICE_ALLOWED: [&str; 18] = [
    "id",
    "license",
    "fingerprint",
    "components",
    "status",
    "offline",
    "holdsSeat",
    "name",
    "hostname",
    "platform",
    "activatedAt",
    "lastSeenAt",
    "nextHeartbeatDueAt",
    "heartbeatDeadlineAt",
    "licenseVersion",
    "checkedOutUntil",
    "releasedAt",
    "variables",
];

/// Types a device must never get a non-null object of.
const NEVER: [&str; 2] = ["Customer", "BillingSubscription"];

/// One field of an object type, from introspection.
#[derive(Debug, Clone)]
struct Field {
    name: String,
    /// The named type (lists and non-null unwrapped) and its kind.
    ty: String,
    kind: String,
    /// `(name, named type, required)`.
    args: Vec<(String, String, bool)>,
}

fn named(ty: &Value) -> (String, String, bool) {
    let required = ty["kind"] == "NON_NULL";
    let mut t = ty;
    while t["name"].is_null() {
        t = &t["ofType"];
    }
    (
        t["name"].as_str().unwrap().to_owned(),
        t["kind"].as_str().unwrap().to_owned(),
        required,
    )
}

const TYPE_REF: &str = "kind name ofType { kind name ofType { kind name ofType { kind name } } }";

/// The object types reachable from `roots`, with their fields.
async fn object_types(server: &TestServer, roots: &[&str]) -> BTreeMap<String, Vec<Field>> {
    let query = format!(
        "query($n: String!) {{ __type(name: $n) {{ fields {{ name args {{ name type {{ {TYPE_REF} }} }} type {{ {TYPE_REF} }} }} }} }}"
    );
    let mut types = BTreeMap::new();
    let mut todo: Vec<String> = roots.iter().map(|r| (*r).to_owned()).collect();
    while let Some(name) = todo.pop() {
        if types.contains_key(&name) {
            continue;
        }
        let data = server.ok(&server.owner_token, &query, json!({ "n": name })).await;
        let fields: Vec<Field> = data["__type"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let (ty, kind, _) = named(&f["type"]);
                let args = f["args"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| {
                        let (ty, _, required) = named(&a["type"]);
                        (a["name"].as_str().unwrap().to_owned(), ty, required)
                    })
                    .collect();
                Field {
                    name: f["name"].as_str().unwrap().to_owned(),
                    ty,
                    kind,
                    args,
                }
            })
            .collect();
        todo.extend(fields.iter().filter(|f| f.kind == "OBJECT").map(|f| f.ty.clone()));
        types.insert(name, fields);
    }
    types
}

/// Arguments for a field: required ones get a value of their type, `first` is 1 (to keep the
/// document's cost low).
fn arguments(field: &Field) -> Option<String> {
    let mut out = Vec::new();
    for (name, ty, required) in &field.args {
        let value = match (name.as_str(), ty.as_str(), required) {
            ("first", _, _) => "1".to_owned(),
            ("meter", "String", true) => "\"scans\"".to_owned(),
            (_, "String" | "ID", true) => "\"x\"".to_owned(),
            (_, "Int", true) => "1".to_owned(),
            (_, "Boolean", true) => "false".to_owned(),
            (_, _, true) => return None,
            _ => continue,
        };
        out.push(format!("{name}: {value}"));
    }
    Some(if out.is_empty() {
        String::new()
    } else {
        format!("({})", out.join(", "))
    })
}

/// A selection of every field of `ty`, recursively (an object type already twice on the path
/// is not entered again), leaving out the fields named in `skip`.
fn selection(
    types: &BTreeMap<String, Vec<Field>>,
    ty: &str,
    path: &mut Vec<String>,
    skip: &BTreeSet<String>,
) -> String {
    path.push(ty.to_owned());
    let mut parts = Vec::new();
    for field in &types[ty] {
        if skip.contains(&format!("{ty}.{}", field.name)) {
            continue;
        }
        let Some(args) = arguments(field) else { continue };
        if field.kind == "OBJECT" {
            // A type is entered at most twice on one path: a device's license's devices are
            // walked, their license's devices no further.
            if path.iter().filter(|t| **t == field.ty).count() >= 2 {
                continue;
            }
            let inner = selection(types, &field.ty, path, skip);
            parts.push(format!("{}{args} {{ {inner} }}", field.name));
        } else {
            parts.push(format!("{}{args}", field.name));
        }
    }
    path.pop();
    parts.join(" ")
}

/// Runs `query` (built by `build` from the fields to skip) until it answers without errors:
/// every error must be FORBIDDEN, and the field it names is left out of the next run (an
/// error in a non-null field nulls its parents, which would hide the rest). Returns the last
/// answer's `data` and the fields that were FORBIDDEN.
async fn walk(
    server: &TestServer,
    token: Option<&str>,
    types: &BTreeMap<String, Vec<Field>>,
    build: impl Fn(&BTreeSet<String>) -> (String, Value),
) -> (Value, BTreeSet<String>) {
    let mut skip = BTreeSet::new();
    for _ in 0..10 {
        let (query, variables) = build(&skip);
        let res = server.gql(token, &query, variables).await;
        let Some(errors) = res.get("errors") else {
            return (res["data"].clone(), skip);
        };
        let mut new = false;
        for error in errors.as_array().unwrap() {
            assert_eq!(error["extensions"]["code"], "FORBIDDEN", "only FORBIDDEN errors: {res}");
            let path = error["path"].as_array().unwrap();
            let field = path.last().unwrap().as_str().unwrap();
            let parent = parent_type(types, path);
            new |= skip.insert(format!("{parent}.{field}"));
        }
        assert!(new, "errors in fields already left out: {res}");
    }
    panic!("the walk did not settle")
}

/// The object type holding the last field of an error path (the root's field is its first).
fn parent_type(types: &BTreeMap<String, Vec<Field>>, path: &[Value]) -> String {
    let roots = [
        ("heartbeat", "Heartbeat"),
        ("activateDevice", "Activation"),
        ("validateLicense", "Validation"),
    ];
    let first = path[0].as_str().unwrap();
    let mut ty = roots
        .iter()
        .find(|(f, _)| *f == first)
        .map_or_else(|| "Query".to_owned(), |(_, t)| (*t).to_owned());
    if ty == "Query" {
        ty = if first == "license" { "License" } else { "Device" }.to_owned();
    }
    for step in &path[1..path.len() - 1] {
        let Some(name) = step.as_str() else { continue };
        ty = types[&ty].iter().find(|f| f.name == name).unwrap().ty.clone();
    }
    ty
}

/// Checks an answer read by a device: License and Device fields beyond the allowed ones are
/// null, no Customer or BillingSubscription is reached.
fn check(types: &BTreeMap<String, Vec<Field>>, ty: &str, value: &Value, at: &str, problems: &mut Vec<String>) {
    match value {
        Value::Array(items) => {
            for item in items {
                check(types, ty, item, at, problems);
            }
        }
        Value::Object(fields) => {
            if NEVER.contains(&ty) {
                problems.push(format!("{at}: a {ty} was read: {value}"));
            }
            for (name, field_value) in fields {
                let field = types[ty].iter().find(|f| f.name == *name).unwrap();
                let allowed = match ty {
                    "License" => LICENSE_ALLOWED.contains(&name.as_str()),
                    "Device" => DEVICE_ALLOWED.contains(&name.as_str()),
                    _ => true,
                };
                if !allowed && !field_value.is_null() {
                    problems.push(format!("{at}.{name}: {ty}.{name} answered {field_value}"));
                }
                if field.kind == "OBJECT" {
                    check(types, &field.ty, field_value, &format!("{at}.{name}"), problems);
                }
            }
        }
        _ => {}
    }
}

/// A license with private data around it: a customer, metadata, a billing subscription id, a
/// meter, and a sibling device with its own fingerprint, components and variables. Returns
/// (license id, key, product id, policy id).
async fn private_license(server: &TestServer, policy_fields: &str) -> (String, String, String, String) {
    let owner = &server.owner_token;
    let (product, policy) = tests::product_and_policy(
        server,
        owner,
        &format!("meters: [{{code: \"scans\"}}], {policy_fields}"),
    )
    .await;
    let customer = server
        .ok(
            owner,
            "mutation { upsertCustomer(input: {externalId: \"EXT-SECRET-1\", name: \"Acme Person\", email: \"person@acme.test\", billingCustomerId: \"cus_billing_secret\"}) { id } }",
            json!({}),
        )
        .await["upsertCustomer"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let issued = server
        .ok(
            owner,
            "mutation($p: ID!, $c: ID) { issueLicense(input: {policyId: $p, customerId: $c, metadata: {secret: \"meta-marker-123\"}, billingSubscriptionId: \"sub_marker_456\"}) { id key } }",
            json!({ "p": policy, "c": customer }),
        )
        .await["issueLicense"]
        .clone();
    let key = issued["key"].as_str().unwrap().to_owned();
    let sibling = activate_with(
        server,
        json!({ "licenseKey": key, "fingerprint": "sibling-fp-789",
                "components": [{ "name": "mac", "value": "sib-comp-xyz" }], "variables": { "secret": "sibling-var-000" } }),
    )
    .await;
    assert!(sibling.get("errors").is_none(), "{sibling}");
    (issued["id"].as_str().unwrap().to_owned(), key, product, policy)
}

pub(crate) async fn activate_with(server: &TestServer, input: Value) -> Value {
    server
        .gql(
            None,
            "mutation($in: ActivateDeviceInput!) { activateDevice(input: $in) { deviceToken device { id } } }",
            json!({ "in": input }),
        )
        .await
}

fn own_input(key: &str) -> Value {
    json!({ "licenseKey": key, "fingerprint": "own-fp", "variables": { "mine": "own-var" } })
}

fn assert_no_leak(what: &str, answer: &Value) {
    let text = answer.to_string();
    for private in PRIVATE {
        assert!(!text.contains(private), "{what} leaked {private}: {answer}");
    }
}

/// The device's own license and device: the allowed fields answer with the right rows.
fn assert_own(what: &str, license: &Value, license_id: &str, product: &str, policy: &str) {
    assert_eq!(license["id"], license_id, "{what}: {license}");
    assert_eq!(license["product"]["id"], product, "{what}");
    assert_eq!(license["policy"]["id"], policy, "{what}");
    assert_eq!(license["policy"]["product"]["id"], product, "{what}");
    assert_eq!(license["status"], "ACTIVE", "{what}");
    assert_eq!(license["activeDevices"], 2, "{what}");
    assert!(
        license["version"].is_number() && license["entitlements"].is_array(),
        "{what}"
    );
    assert!(license["customer"].is_null() && license["metadata"].is_null(), "{what}");
}

async fn scope_walk(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner_token.clone();
    let (license, key, product, policy) = private_license(&server, "maxActivations: 3").await;
    let types = object_types(&server, &["License", "Device", "Heartbeat", "Activation", "Validation"]).await;
    let sel = |ty: &str, skip: &BTreeSet<String>| selection(&types, ty, &mut Vec::new(), skip);

    // The walk reaches the private data: staff see all of it through the same selection.
    let own = activate_with(&server, own_input(&key)).await["data"]["activateDevice"].clone();
    let own_id = own["device"]["id"].as_str().unwrap().to_owned();
    let (staff, skipped) = walk(&server, Some(&owner), &types, |skip| {
        (
            format!(
                "query($l: ID, $d: ID!) {{ license(id: $l) {{ {} }} device(id: $d) {{ {} }} }}",
                sel("License", skip),
                sel("Device", skip)
            ),
            json!({ "l": license, "d": own_id }),
        )
    })
    .await;
    assert!(skipped.is_empty(), "staff read every field: {skipped:?}");
    let staff_text = staff.to_string();
    for private in PRIVATE
        .iter()
        .filter(|p| !p.starts_with("sib") && !p.starts_with("cus_"))
    {
        assert!(staff_text.contains(private), "the walk reaches {private}: {staff}");
    }

    // A device token, through heartbeat.
    let token = own["deviceToken"].as_str().unwrap().to_owned();
    let (beat, forbidden) = walk(&server, Some(&token), &types, |skip| {
        (
            format!("mutation {{ heartbeat {{ device {{ {} }} }} }}", sel("Device", skip)),
            json!({}),
        )
    })
    .await;
    let device = &beat["heartbeat"]["device"];
    let mut problems = Vec::new();
    check(&types, "Device", device, "heartbeat.device", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_no_leak("heartbeat", &beat);
    assert_eq!(device["id"], own_id.as_str());
    assert_eq!(
        device["variables"]["mine"], "own-var",
        "a device reads its own variables"
    );
    assert_own("heartbeat", &device["license"], &license, &product, &policy);
    let nodes = &device["license"]["devices"]["nodes"];
    assert_eq!(nodes.as_array().unwrap().len(), 1, "only itself: {nodes}");
    assert_eq!(nodes[0]["fingerprint"], "own-fp");
    assert_eq!(device["license"]["devices"]["totalCount"], 1);
    assert!(forbidden.contains("License.usageHistory"), "{forbidden:?}");

    // The activateDevice result (a device scope for a caller with no token yet).
    let (activated, _) = walk(&server, None, &types, |skip| {
        (
            format!(
                "mutation($in: ActivateDeviceInput!) {{ activateDevice(input: $in) {{ device {{ {} }} }} }}",
                sel("Device", skip)
            ),
            json!({ "in": own_input(&key) }),
        )
    })
    .await;
    let device = &activated["activateDevice"]["device"];
    let mut problems = Vec::new();
    check(&types, "Device", device, "activateDevice.device", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_no_leak("activateDevice", &activated);
    assert_own("activateDevice", &device["license"], &license, &product, &policy);
    assert_eq!(device["license"]["devices"]["totalCount"], 1);

    // The validateLicense result (the key holder): no device listed at all.
    let (validated, _) = walk(&server, None, &types, |skip| {
        (
            format!(
                "mutation($in: ValidateLicenseInput!) {{ validateLicense(input: $in) {{ valid license {{ {} }} device {{ {} }} }} }}",
                sel("License", skip),
                sel("Device", skip)
            ),
            json!({ "in": { "licenseKey": key, "fingerprint": "own-fp" } }),
        )
    })
    .await;
    let validation = &validated["validateLicense"];
    assert_eq!(validation["valid"], true, "{validated}");
    let mut problems = Vec::new();
    check(
        &types,
        "License",
        &validation["license"],
        "validateLicense.license",
        &mut problems,
    );
    check(
        &types,
        "Device",
        &validation["device"],
        "validateLicense.device",
        &mut problems,
    );
    assert!(problems.is_empty(), "{problems:#?}");
    assert_no_leak("validateLicense", &validated);
    assert_own("validateLicense", &validation["license"], &license, &product, &policy);
    assert_eq!(validation["license"]["devices"]["totalCount"], 0);
    assert_eq!(validation["device"]["fingerprint"], "own-fp");
}
on_both_databases!(a_device_reads_its_license_file_fields_only, scope_walk);

async fn root_queries(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, key, product, policy) = private_license(&server, "maxActivations: 3").await;
    let (_, _, foreign_key) = tests::license_with_policy(&server, &server.owner_token, "maxActivations: 1").await;
    let foreign = server
        .ok(
            &server.owner_token,
            "{ products(first: 100) { nodes { id } } policies(first: 100) { nodes { id } } }",
            json!({}),
        )
        .await;
    let token = activate_with(&server, own_input(&key)).await["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!foreign_key.is_empty());

    // Own and foreign catalog rows by id: refused.
    for (field, ids) in [
        ("product", foreign["products"]["nodes"].clone()),
        ("policy", foreign["policies"]["nodes"].clone()),
    ] {
        for id in ids.as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()) {
            let query = format!("query($id: ID!) {{ {field}(id: $id) {{ id name }} }}");
            let res = server.gql(Some(&token), &query, json!({ "id": id })).await;
            assert_eq!(
                error_code(&res),
                Some("FORBIDDEN"),
                "{field} {id} (own: {}): {res}",
                id == product || id == policy
            );
            assert!(res["data"].is_null() || res["data"][field].is_null(), "{res}");
        }
    }

    // Every root query: FORBIDDEN to a device (the signing keys are public).
    let schema = server
        .ok(
            &server.owner_token,
            &format!("{{ __schema {{ queryType {{ fields {{ name args {{ name type {{ {TYPE_REF} }} }} type {{ {TYPE_REF} }} }} }} }} }}"),
            json!({}),
        )
        .await;
    for f in schema["__schema"]["queryType"]["fields"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        if name == "signingKeys" {
            continue;
        }
        let (_, kind, _) = named(&f["type"]);
        let field = Field {
            name: name.to_owned(),
            ty: String::new(),
            kind: kind.clone(),
            args: f["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    let (ty, _, required) = named(&a["type"]);
                    (a["name"].as_str().unwrap().to_owned(), ty, required)
                })
                .collect(),
        };
        let args = arguments(&field).unwrap();
        let pick = if kind == "OBJECT" { " { __typename }" } else { "" };
        let res = server
            .gql(Some(&token), &format!("{{ {name}{args}{pick} }}"), json!({}))
            .await;
        assert_eq!(error_code(&res), Some("FORBIDDEN"), "{name}: {res}");
    }
}
on_both_databases!(root_queries_refuse_a_device_token, root_queries);
