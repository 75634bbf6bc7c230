//! The two HTML pages the API serves to browsers: GraphiQL (`GET /graphql` without a query) and
//! the staff console (`GET /console`). Both are templates from `api/web/` that name only this
//! build's embedded assets ([`crate::assets`]); a Content-Security-Policy lets the browser load
//! and connect to this origin alone, so neither page can reach an outside host, air-gapped or not.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use actix_web::http::header;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

const GRAPHIQL_TEMPLATE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/graphiql/index.html"));
const CONSOLE_TEMPLATE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/console/index.html"));

/// A rendered page and the policy it is served with.
struct Page {
    html: String,
    content_security_policy: String,
}

/// The policy of both pages: this origin only (`'self'` covers `ws:`/`wss:` to the same host for
/// `/graphql/ws`), fonts and images also as `data:` URLs (GraphiQL's CSS inlines its fonts),
/// inline styles (GraphiQL and the usage chart set `style` attributes) and, for scripts, this
/// origin plus the one inline import map by its hash.
fn content_security_policy(inline_script_hash: Option<&str>) -> String {
    let scripts = inline_script_hash.map_or_else(|| "'self'".to_owned(), |hash| format!("'self' '{hash}'"));
    format!(
        "default-src 'self'; script-src {scripts}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
         font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    )
}

static GRAPHIQL: LazyLock<Page> = LazyLock::new(|| Page {
    html: GRAPHIQL_TEMPLATE.replace("{{assets}}", &crate::assets::prefix()),
    content_security_policy: content_security_policy(None),
});

static CONSOLE: LazyLock<Page> = LazyLock::new(|| {
    let assets = crate::assets::prefix();
    // The console's modules import "preact", "preact/hooks" and "htm" by name.
    let import_map = serde_json::json!({ "imports": {
        "preact": format!("{assets}/vendor/preact.module.js"),
        "preact/hooks": format!("{assets}/vendor/preact-hooks.module.js"),
        "htm": format!("{assets}/vendor/htm.module.js"),
    }})
    .to_string();
    let hash = format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(import_map.as_bytes()))
    );
    Page {
        html: CONSOLE_TEMPLATE
            .replace("{{importmap}}", &import_map)
            .replace("{{assets}}", &assets),
        content_security_policy: content_security_policy(Some(&hash)),
    }
});

fn respond(page: &Page) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, page.content_security_policy.as_str()))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(page.html.clone())
}

/// GraphiQL against `/graphql` and `/graphql/ws`.
pub fn graphiql() -> HttpResponse {
    respond(&GRAPHIQL)
}

/// `GET /console`: the staff console (its pages are routed in the browser, after `#`).
pub async fn console() -> HttpResponse {
    respond(&CONSOLE)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn pages_name_only_this_builds_assets() {
        let assets = crate::assets::prefix();
        for page in [&*GRAPHIQL, &*CONSOLE] {
            assert!(!page.html.contains("{{"), "a placeholder is left");
            assert!(!page.html.contains("http://") && !page.html.contains("https://"));
            assert!(page.html.contains(&format!("{assets}/")));
        }
        for path in ["vendor/graphiql.min.js", "vendor/graphiql.min.css", "graphiql/boot.js"] {
            assert!(GRAPHIQL.html.contains(&format!("{assets}/{path}")), "{path}");
        }
        assert!(CONSOLE.html.contains(&format!("{assets}/console/app.js")));
    }

    #[test]
    fn the_console_policy_allows_its_import_map_by_hash() {
        let start = CONSOLE.html.find("<script type=\"importmap\">").unwrap() + 25;
        let end = start + CONSOLE.html[start..].find("</script>").unwrap();
        let hash =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&CONSOLE.html.as_bytes()[start..end]));
        assert!(CONSOLE.content_security_policy.contains(&format!("'sha256-{hash}'")));
        assert!(!GRAPHIQL.content_security_policy.contains("sha256-"));
    }
}
