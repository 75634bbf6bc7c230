//! The browser files embedded in the binary: the vendored GraphiQL, React, preact and htm builds
//! (`api/web/vendor/`, re-vendored from `api/web/package-lock.json` by `scripts/vendor-web.sh`)
//! and the staff console's own modules (`api/web/console/`). They are served under
//! `/assets/<build>/<path>`, where `<build>` is a hash over every embedded file: a new release
//! changes the path, so the files can be cached for a year (`immutable`). The HTML pages that
//! name them ([`crate::pages`]) are served with `no-cache`.

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use sha2::{Digest as _, Sha256};

/// One embedded file.
struct Asset {
    /// Its path below `api/web/` and below `/assets/<build>/`.
    path: &'static str,
    /// Its bytes, as committed.
    body: &'static [u8],
    /// Its `Content-Type`.
    content_type: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

macro_rules! embed {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $path)),
            content_type: $content_type,
        }
    };
}

/// Every file below `/assets/<build>/`.
static ASSETS: &[Asset] = &[
    embed!("vendor/graphiql.min.js", JS),
    embed!("vendor/graphiql.min.css", CSS),
    embed!("vendor/react.production.min.js", JS),
    embed!("vendor/react-dom.production.min.js", JS),
    embed!("vendor/preact.module.js", JS),
    embed!("vendor/preact-hooks.module.js", JS),
    embed!("vendor/htm.module.js", JS),
    embed!("graphiql/boot.js", JS),
    embed!("console/console.css", CSS),
    embed!("console/app.js", JS),
    embed!("console/api.js", JS),
    embed!("console/ui.js", JS),
    embed!("console/format.js", JS),
    embed!("console/pages/signin.js", JS),
    embed!("console/pages/alerts.js", JS),
    embed!("console/pages/anomalies.js", JS),
    embed!("console/pages/licenses.js", JS),
    embed!("console/pages/license.js", JS),
    embed!("console/pages/usage_chart.js", JS),
    embed!("console/pages/billing.js", JS),
];

/// The first 16 hex digits of a SHA-256 over every embedded file's path and bytes.
static BUILD: LazyLock<String> = LazyLock::new(|| {
    let mut hash = Sha256::new();
    for asset in ASSETS {
        hash.update(asset.path.as_bytes());
        hash.update([0]);
        hash.update((asset.body.len() as u64).to_be_bytes());
        hash.update(asset.body);
    }
    hex::encode(&hash.finalize()[..8])
});

/// The URL prefix of this build's assets, e.g. `/assets/0123456789abcdef`.
pub fn prefix() -> String {
    format!("/assets/{}", *BUILD)
}

/// The paths of every embedded file below [`prefix`] (the tests fetch them all).
pub fn paths() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|asset| asset.path)
}

/// `GET /assets/{build}/{path}`: the file, cached for a year; 404 for an unknown path or another
/// build's prefix (a page of an older release asking after an upgrade reloads its HTML first).
pub async fn serve(path: web::Path<(String, String)>) -> HttpResponse {
    let (build, path) = path.into_inner();
    let found = (build == *BUILD)
        .then(|| ASSETS.iter().find(|asset| asset.path == path))
        .flatten();
    match found {
        Some(asset) => HttpResponse::Ok()
            .content_type(asset.content_type)
            .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .body(asset.body),
        None => HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("no such asset in this build"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_unique_and_the_build_is_16_hex_digits() {
        let mut paths: Vec<_> = paths().collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), ASSETS.len());
        assert_eq!(BUILD.len(), 16);
        assert!(BUILD.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
