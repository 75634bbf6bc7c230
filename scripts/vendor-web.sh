#!/usr/bin/env bash
# Re-vendors the browser libraries that licensing-api embeds (GraphiQL with its React peers for
# /graphql; preact, its hooks and htm for /console) from api/web/package-lock.json with `npm ci`,
# copying the few built files the pages load into api/web/vendor/ (with their licenses).
#
#   scripts/vendor-web.sh           rewrite api/web/vendor/ from the lockfile
#   scripts/vendor-web.sh --check   fail when the committed api/web/vendor/ differs from what the
#                                   lockfile gives (scripts/test.sh runs this)
set -euo pipefail
cd "$(dirname "$0")/../api/web"

check=false
[ "${1:-}" = --check ] && check=true

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cp package.json package-lock.json "$build/"
(cd "$build" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)

out="$build/vendor"
copy() { install -D -m 644 "$build/node_modules/$1" "$out/$2"; }
copy graphiql/graphiql.min.js graphiql.min.js
copy graphiql/graphiql.min.css graphiql.min.css
copy react/umd/react.production.min.js react.production.min.js
copy react-dom/umd/react-dom.production.min.js react-dom.production.min.js
copy preact/dist/preact.module.js preact.module.js
copy preact/hooks/dist/hooks.module.js preact-hooks.module.js
copy htm/dist/htm.module.js htm.module.js
for package in graphiql react react-dom preact htm; do
  copy "$package/LICENSE" "licenses/$package.txt"
done
node -e '
  const lock = require(process.argv[1]).packages;
  for (const p of ["graphiql", "react", "react-dom", "preact", "htm"])
    console.log(p + " " + lock["node_modules/" + p].version);
' "$build/package-lock.json" >"$out/VERSIONS"

if $check; then
  if ! diff -r vendor "$out" >/dev/null; then
    diff -rq vendor "$out" || true
    echo "api/web/vendor/ does not match api/web/package-lock.json: run scripts/vendor-web.sh and commit" >&2
    exit 1
  fi
  echo "api/web/vendor/ matches api/web/package-lock.json"
else
  rm -rf vendor
  cp -r "$out" vendor
  echo "api/web/vendor/ rewritten from api/web/package-lock.json"
fi
