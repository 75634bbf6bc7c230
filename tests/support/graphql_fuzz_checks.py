"""Schemathesis checks for the GraphQL fuzz run (loaded through SCHEMATHESIS_HOOKS).

Schemathesis' own `not_a_server_error` counts every GraphQL error as a failure, even the
INVALID_INPUT a fuzzed input deserves, so the run uses these two instead: no answer is a 5xx,
and every error carries an allow-listed code, never INTERNAL (an INTERNAL is a bug found).
"""

import json

import schemathesis

ALLOWED = {
    "UNAUTHENTICATED", "FORBIDDEN", "NOT_FOUND", "INVALID_INPUT", "ACTIVATION_LIMIT_REACHED",
    "LICENSE_EXPIRED", "LICENSE_SUSPENDED", "LICENSE_REVOKED", "FINGERPRINT_MISMATCH",
    "USAGE_LIMIT_EXCEEDED", "IDEMPOTENCY_CONFLICT", "INVALID_FILE", "RATE_LIMITED",
    "QUERY_TOO_COMPLEX",
}


@schemathesis.check
def no_5xx(ctx, response, case):
    """The server never answers 5xx."""
    if response.status_code >= 500:
        raise AssertionError(f"HTTP {response.status_code}: {response.content[:500]!r}")


@schemathesis.check
def no_internal_error(ctx, response, case):
    """Every error has an allow-listed code; none is INTERNAL."""
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        raise AssertionError(f"the answer is not JSON: {response.content[:200]!r}")
    errors = body.get("errors") if isinstance(body, dict) else None
    for error in errors or []:
        code = ((error or {}).get("extensions") or {}).get("code")
        if code not in ALLOWED:
            raise AssertionError(f"error code {code!r}: {json.dumps(error)[:500]}")
