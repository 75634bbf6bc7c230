//! What a parsed document asks for, read before it runs: whether it only introspects, and how
//! many of the expensive anonymous fields its selected operation holds (aliases, fragments and
//! inline fragments included).

use std::collections::HashMap;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, OperationType, Selection, SelectionSet,
};
use async_graphql::{Name, Positioned};

/// Root fields that cost real work for a caller who may have no account (argon2, a seat
/// transaction, a signature, a file to verify): at most one of them per document.
pub const ONE_PER_DOCUMENT: [&str; 7] = [
    "login",
    "activateDevice",
    "deviceKeyChallenge",
    "validateLicense",
    "importDeactivation",
    "importUsageReport",
    "generateOfflineLicense",
];

/// The operations `operation_name` selects: the only one of a single-operation document, the
/// named one, or every operation when there is no name (a document with several unnamed
/// choices fails later anyway).
fn selected<'a>(doc: &'a ExecutableDocument, operation_name: Option<&str>) -> Vec<&'a Positioned<OperationDefinition>> {
    match &doc.operations {
        DocumentOperations::Single(op) => vec![op],
        DocumentOperations::Multiple(ops) => ops
            .iter()
            .filter(|(name, _)| operation_name.is_none_or(|wanted| name.as_str() == wanted))
            .map(|(_, op)| op)
            .collect(),
    }
}

/// Whether the selected operation of `doc` only asks for introspection fields.
pub fn introspects_only(doc: &ExecutableDocument, operation_name: Option<&str>) -> bool {
    fn walk(doc: &ExecutableDocument, set: &SelectionSet, seen: &mut Vec<String>) -> bool {
        set.items.iter().all(|selection| match &selection.node {
            Selection::Field(field) => matches!(field.node.name.node.as_str(), "__schema" | "__type" | "__typename"),
            Selection::InlineFragment(inline) => walk(doc, &inline.node.selection_set.node, seen),
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.to_string();
                if seen.contains(&name) {
                    return false;
                }
                seen.push(name);
                doc.fragments
                    .get(&spread.node.fragment_name.node)
                    .is_some_and(|fragment| walk(doc, &fragment.node.selection_set.node, seen))
            }
        })
    }
    let [op] = selected(doc, operation_name)[..] else {
        return false;
    };
    op.node.ty == OperationType::Query && walk(doc, &op.node.selection_set.node, &mut Vec::new())
}

/// How many [`ONE_PER_DOCUMENT`] fields the selected operation(s) of `doc` would run, counting
/// each alias and each fragment spread (each fragment is counted once and remembered, so a
/// document of fragments spread into fragments costs linear time).
#[must_use]
pub fn costly_fields(doc: &ExecutableDocument, operation_name: Option<&str>) -> usize {
    fn count(doc: &ExecutableDocument, set: &SelectionSet, memo: &mut HashMap<Name, usize>) -> usize {
        set.items.iter().fold(0usize, |total, selection| {
            let here = match &selection.node {
                Selection::Field(field) => usize::from(ONE_PER_DOCUMENT.contains(&field.node.name.node.as_str())),
                Selection::InlineFragment(inline) => count(doc, &inline.node.selection_set.node, memo),
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    if let Some(known) = memo.get(name) {
                        *known
                    } else {
                        // In progress: a cycle counts nothing more (validation refuses it).
                        memo.insert(name.clone(), 0);
                        let n = doc
                            .fragments
                            .get(name)
                            .map_or(0, |fragment| count(doc, &fragment.node.selection_set.node, memo));
                        memo.insert(name.clone(), n);
                        n
                    }
                }
            };
            total.saturating_add(here)
        })
    }
    let mut memo = HashMap::new();
    selected(doc, operation_name)
        .into_iter()
        .map(|op| count(doc, &op.node.selection_set.node, &mut memo))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn costly(query: &str, operation: Option<&str>) -> usize {
        costly_fields(&async_graphql::parser::parse_query(query).unwrap(), operation)
    }

    #[test]
    fn counts_aliases_fragments_and_inline_fragments() {
        assert_eq!(
            costly("mutation { login(email: \"a\", password: \"b\") { token } }", None),
            1
        );
        assert_eq!(costly("mutation { a: login { token } b: login { token } }", None), 2);
        assert_eq!(
            costly(
                "mutation { ...F ... on Mutation { validateLicense { valid } } } fragment F on Mutation { activateDevice { deviceToken } }",
                None
            ),
            2
        );
        assert_eq!(
            costly(
                "mutation { ...F ...F } fragment F on Mutation { login { token } }",
                None
            ),
            2
        );
        assert_eq!(costly("{ viewer { role } }", None), 0);
        assert_eq!(
            costly(
                "mutation A { login { token } } mutation B { a: login { token } b: login { token } }",
                Some("A")
            ),
            1
        );
        assert_eq!(
            costly(
                "mutation A { login { token } } mutation B { a: login { token } b: login { token } }",
                None
            ),
            2
        );
    }

    #[test]
    fn nested_fragments_cost_linear_time_and_cycles_end() {
        let mut query = String::from("mutation { ...F0 }");
        for i in 0..40 {
            query.push_str(&format!(" fragment F{i} on Mutation {{ ...F{} ...F{} }}", i + 1, i + 1));
        }
        query.push_str(" fragment F40 on Mutation { login { token } }");
        assert!(costly(&query, None) > 1, "2^40 logins, counted without walking them");
        assert_eq!(
            costly(
                "mutation { ...A } fragment A on Mutation { ...B login { token } } fragment B on Mutation { ...A }",
                None
            ),
            1
        );
    }

    #[test]
    fn introspection_only() {
        let doc = async_graphql::parser::parse_query("{ __schema { queryType { name } } }").unwrap();
        assert!(introspects_only(&doc, None));
        let doc = async_graphql::parser::parse_query("{ __typename viewer { role } }").unwrap();
        assert!(!introspects_only(&doc, None));
    }
}
