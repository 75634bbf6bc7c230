#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what is missing, starts a throwaway
# PostgreSQL on a free loopback port, builds the binaries the end-to-end tests drive, runs
# `cargo test --workspace` (extra arguments are passed on), and stops PostgreSQL again.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pg_bin" ]; then
  echo "installing PostgreSQL..."
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

# The device tests verify license files with OpenSSL, an Ed25519 implementation independent of
# ours; the worker tests run the queue on Redis and send mail to a real SMTP server (aiosmtpd).
missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v redis-server >/dev/null || missing+=(redis-server)
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || missing+=(python3-aiosmtpd)
# The billing tests talk to localstripe (a fake Stripe from PyPI), pinned, in a venv of its own;
# creating the venvs (localstripe, schemathesis below) needs Debian's python3-venv.
localstripe_version=1.15.10
localstripe_venv="${XDG_CACHE_HOME:-$HOME/.cache}/licensing-tests/localstripe"
localstripe_ok() {
  "$localstripe_venv/bin/python" -c \
    "import sys, localstripe; sys.exit(localstripe.__version__ != '$localstripe_version')" 2>/dev/null
}
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
# The console's browser tests run Debian's Chromium (Playwright drives it, never downloads one);
# npm re-vendors the console's and GraphiQL's libraries to check them against the lockfile.
[ -x /usr/bin/chromium ] || missing+=(chromium fonts-dejavu-core)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}..."
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! localstripe_ok; then
  echo "installing localstripe $localstripe_version into $localstripe_venv..."
  "$localstripe_venv/bin/python" -m pip --version >/dev/null 2>&1 || /usr/bin/python3 -m venv --clear "$localstripe_venv"
  "$localstripe_venv/bin/python" -m pip install -q --disable-pip-version-check "localstripe==$localstripe_version"
fi
export LICENSING_TEST_LOCALSTRIPE_PYTHON="$localstripe_venv/bin/python"

# The GraphQL fuzz test runs schemathesis (PyPI), pinned, in a venv of its own.
schemathesis_version=4.32.5
schemathesis_venv="${XDG_CACHE_HOME:-$HOME/.cache}/licensing-tests/schemathesis"
if ! "$schemathesis_venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$schemathesis_version"; then
  echo "installing schemathesis $schemathesis_version into $schemathesis_venv..."
  /usr/bin/python3 -m venv --clear "$schemathesis_venv"
  "$schemathesis_venv/bin/python" -m pip install -q --disable-pip-version-check "schemathesis==$schemathesis_version"
fi
export LICENSING_TEST_SCHEMATHESIS="$schemathesis_venv/bin/schemathesis"

# The console's browser tests run Playwright for Python (PyPI), pinned, in a venv of its own.
playwright_version=1.65.2
playwright_venv="${XDG_CACHE_HOME:-$HOME/.cache}/licensing-tests/playwright"
if ! "$playwright_venv/bin/python" -c \
    "import sys, importlib.metadata as m; sys.exit(m.version('playwright') != '$playwright_version')" 2>/dev/null; then
  echo "installing playwright $playwright_version into $playwright_venv..."
  /usr/bin/python3 -m venv --clear "$playwright_venv"
  "$playwright_venv/bin/python" -m pip install -q --disable-pip-version-check "playwright==$playwright_version"
fi
export LICENSING_TEST_PLAYWRIGHT_PYTHON="$playwright_venv/bin/python"

# The browser files embedded in licensing-api must be what api/web/package-lock.json gives.
scripts/vendor-web.sh --check

work=$(mktemp -d /tmp/licensing-test.XXXXXX)
chmod 755 "$work"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# initdb refuses to run as root: use the postgres system user then.
pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  chown postgres "$work"
fi

stop_postgres() {
  pg "$pg_bin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap stop_postgres EXIT

pg "$pg_bin/initdb" -D "$work/pg" -U postgres --auth=trust -E UTF8 >/dev/null
pg "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
  -o "-p $port -k $work -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=400" \
  start >/dev/null
export LICENSING_TEST_PG_URL="postgres://postgres@127.0.0.1:$port"
echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"

cargo build --workspace --bins
# Tee the output so the run ends with one plain total over every test binary.
cargo test --workspace "$@" 2>&1 | tee "$work/test.log"
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$work/test.log"
