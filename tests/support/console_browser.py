"""The staff console and GraphiQL in headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright; it never downloads a browser). Run by tests/tests/e2e/console.rs with one argument, a
JSON file naming the server, two staff users (ADMIN, READ_ONLY), license A (99 of 100 seats
taken) and license B (0 of 1), and where screenshots go.

Steps, each failing loudly:
  1. GraphiQL: a subscription typed into it receives the alert raised when license B reaches
     its cap (the websocket authenticates with the Authorization typed in its headers editor).
  2. The console as ADMIN: sign in with email and password; the 100th activation of license A
     makes its ACTIVATION_LIMIT_REACHED alert appear live (no reload); acknowledge it; open the
     license: "100/100" and its 100 devices; filter the licenses; acknowledge the open anomaly
     with a note; the billing drift page. A screenshot of every page.
  3. The console as READ_ONLY: no mutating button on any page, and a suspension forged from the
     page's own token is refused with FORBIDDEN.
  4. Every request the browser made went to the server itself, and no page logged an error.
"""

import json
import os
import shutil
import sys
import urllib.request
from urllib.parse import urlsplit

from playwright.sync_api import expect, sync_playwright

CONFIG = json.load(open(sys.argv[1]))
BASE = CONFIG["base_url"]
ORIGIN = urlsplit(BASE).netloc
SHOTS = CONFIG["screenshots"]
DOCS = CONFIG.get("docs")
LICENSE_A = CONFIG["license_a"]
LICENSE_B = CONFIG["license_b"]
MUTATING = ["Acknowledge", "Suspend", "Reinstate", "Renew", "Release", "Export refresh file"]

outside_requests = []
page_errors = []


def step(message):
    print(f"step: {message}", flush=True)


def activate(key, n):
    """The shipped software's activation, as a device would send it."""
    body = json.dumps({
        "query": "mutation($in: ActivateDeviceInput!) { activateDevice(input: $in) { device { id } } }",
        "variables": {"in": {"licenseKey": key, "fingerprint": f"console-{key}-{n}", "name": f"ws-{n:03}",
                             "hostname": f"ws-{n:03}.acme.test"}},
    }).encode()
    request = urllib.request.Request(f"{BASE}/graphql", data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as response:
        answer = json.load(response)
    assert "errors" not in answer, answer


def screenshot(page, name):
    path = os.path.join(SHOTS, f"{name}.png")
    page.screenshot(path=path)
    if DOCS:
        os.makedirs(DOCS, exist_ok=True)
        shutil.copyfile(path, os.path.join(DOCS, f"{name}.png"))


def watch(context):
    """Fails the run on any request off the server's origin (and refuses it)."""
    def route(route):
        if urlsplit(route.request.url).netloc == ORIGIN or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            outside_requests.append(route.request.url)
            route.abort()
    context.route("**/*", route)

    def on_page(page):
        page.on("console", lambda m: m.type == "error" and page_errors.append(f"{page.url}: {m.text}"))
        page.on("pageerror", lambda e: page_errors.append(f"{page.url}: {e}"))
        page.on("websocket", lambda ws: urlsplit(ws.url).netloc != ORIGIN and outside_requests.append(ws.url))
    context.on("page", on_page)


def settle(page):
    """graphql-transport-ws does not acknowledge a `subscribe`: give the server a moment to
    register it before the alert is raised (otherwise the alert may be published first)."""
    page.wait_for_timeout(1000)


def set_editor(page, selector, text):
    """Sets a GraphiQL (CodeMirror 5) editor's text."""
    page.wait_for_function(
        """([selector, text]) => {
            const editor = [...document.querySelectorAll(selector)].find((e) => e.offsetParent !== null);
            if (!editor || !editor.CodeMirror) return false;
            editor.CodeMirror.setValue(text);
            return true;
        }""",
        arg=[selector, text],
    )


def graphiql(context, token):
    step("GraphiQL: a subscription receives a live alert over /graphql/ws")
    page = context.new_page()
    page.goto(f"{BASE}/graphql")
    page.wait_for_selector(".graphiql-container")
    set_editor(page, ".graphiql-query-editor .CodeMirror",
               "subscription LiveAlerts {\n  alerts {\n    kind\n    message\n    license { id }\n  }\n}\n")
    page.get_by_role("button", name="Headers").click()
    set_editor(page, ".graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror",
               json.dumps({"Authorization": f"Bearer {token}"}))
    sent = []
    page.on("websocket", lambda socket: socket.on("framesent", lambda frame: sent.append(frame)))
    page.locator(".graphiql-execute-button").click()
    for _ in range(200):
        if any('"subscribe"' in str(frame) for frame in sent):
            break
        page.wait_for_timeout(50)
    else:
        raise AssertionError(f"GraphiQL sent no subscribe over its websocket: {sent}")
    settle(page)
    activate(LICENSE_B["key"], 1)
    page.wait_for_function(
        """(license) => {
            const response = document.querySelector('.graphiql-response .CodeMirror');
            const text = response && response.CodeMirror.getValue();
            return text && text.includes('ACTIVATION_LIMIT_REACHED') && text.includes(license);
        }""",
        arg=LICENSE_B["id"],
        timeout=30000,
    )
    screenshot(page, "graphiql")
    page.close()


def sign_in(page, user):
    page.goto(f"{BASE}/console")
    page.get_by_label("Email").fill(user["email"])
    page.get_by_label("Password", exact=True).fill(user["password"])
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_selector("header.top")


def admin_flow(context):
    page = context.new_page()
    step("console: the sign-in page")
    page.goto(f"{BASE}/console")
    page.wait_for_selector("#email")
    screenshot(page, "signin")

    step("console: sign in as ADMIN with email and password")
    sign_in(page, CONFIG["admin"])
    expect(page.locator("[data-role]")).to_have_text("ADMIN")
    page.wait_for_selector("[data-live=live]", timeout=30000)
    settle(page)

    step("console: the 100th activation raises an alert that appears without a reload")
    page.evaluate("window.__sameDocument = true")
    activate(LICENSE_A["key"], 100)
    row = page.locator(f'tr[data-kind="ACTIVATION_LIMIT_REACHED"]:has(a[href="#/licenses/{LICENSE_A["id"]}"])')
    expect(row).to_have_count(1, timeout=30000)
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
    screenshot(page, "alerts")

    step("console: acknowledge it")
    row.get_by_role("button", name="Acknowledge").click()
    expect(row).to_have_count(0)
    page.get_by_label("Unacknowledged only").uncheck()
    expect(row).to_contain_text("Acknowledged", timeout=10000)

    step("console: the license page shows 100/100 and its devices")
    row.locator(f'a[href="#/licenses/{LICENSE_A["id"]}"]').click()
    page.wait_for_selector("#license-title")
    expect(page.locator(".facts .activations .count")).to_have_text("100/100")
    expect(page.locator("#devices-title")).to_have_text("Devices (100)")
    screenshot(page, "license")
    # 50 devices a page: these and the next 50 are the license's 100.
    expect(page.locator("tr[data-device]")).to_have_count(50)
    devices = set(page.locator("tr[data-device]").evaluate_all("rows => rows.map((r) => r.dataset.device)"))
    page.get_by_role("button", name="Next devices").click()
    expect(page.locator(f'tr[data-device="{next(iter(devices))}"]')).to_have_count(0)
    expect(page.locator("tr[data-device]")).to_have_count(50)
    devices |= set(page.locator("tr[data-device]").evaluate_all("rows => rows.map((r) => r.dataset.device)"))
    assert len(devices) == 100, f"{len(devices)} distinct devices"
    page.get_by_role("button", name="Previous devices").click()
    expect(page.locator('.usage-chart[data-meter="scans"] svg rect.bar').first).to_be_attached()
    for label in ["Suspend", "Renew", "Release", "Export refresh file"]:
        assert page.locator(f'button[data-action="{label}"]').count() > 0, f"no {label} button for ADMIN"

    step("console: the licenses list filters by status and shows activations")
    page.get_by_role("link", name="Licenses", exact=True).first.click()
    page.wait_for_selector("table.list tbody tr[data-license]")
    page.get_by_label("Status").select_option("ACTIVE")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(f'tr[data-license="{LICENSE_A["id"]}"] .activations .count')).to_have_text("100/100")
    expect(page.locator(f'tr[data-license="{LICENSE_B["id"]}"] .activations .count')).to_have_text("1/1")
    expect(page.locator("p[aria-live]")).not_to_contain_text("loading")
    screenshot(page, "licenses")

    step("console: acknowledge the open anomaly with a note")
    page.get_by_role("link", name="Anomalies", exact=True).click()
    card = page.locator(f'[data-anomaly="{CONFIG["anomaly"]}"]')
    expect(card).to_contain_text("SHARED FINGERPRINT")
    card.get_by_label("Note").fill(CONFIG["anomaly_note"])
    screenshot(page, "anomalies")
    card.get_by_role("button", name="Acknowledge").click()
    expect(card).to_have_count(0)

    step("console: the billing drift page")
    page.get_by_role("link", name="Billing drift", exact=True).click()
    page.wait_for_selector("#billing-title")
    expect(page.locator(".empty, table.list")).to_have_count(1)
    expect(page.locator(".error")).to_have_count(0)
    screenshot(page, "billing")
    page.close()


def read_only_flow(context):
    step("console: READ_ONLY sees no mutating button")
    page = context.new_page()
    sign_in(page, CONFIG["read_only"])
    expect(page.locator("[data-role]")).to_have_text("READ_ONLY")
    for route, ready in [("alerts", "[data-live=live]"), ("anomalies", "#anomalies-title"),
                         ("licenses", "tr[data-license]"), (f"licenses/{LICENSE_A['id']}", "tr[data-device]"),
                         ("billing", "#billing-title")]:
        page.goto(f"{BASE}/console#/{route}")
        page.wait_for_selector(ready, timeout=30000)
        page.wait_for_timeout(300)
        for label in MUTATING:
            assert page.get_by_role("button", name=label).count() == 0, f"{label} shown to READ_ONLY on {route}"
        assert page.locator("button[data-action]").count() == 0, f"an action button on {route}"
        if route.startswith("licenses/"):
            screenshot(page, "read-only-license")

    step("console: a forged suspension from the READ_ONLY page is refused")
    answer = page.evaluate(
        """async (id) => {
            const token = sessionStorage.getItem('licensing.console.token');
            const response = await fetch('/graphql', { method: 'POST',
                headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
                body: JSON.stringify({ query: 'mutation($id: ID!) { suspendLicense(id: $id, reason: "forged") { id status } }',
                                       variables: { id } }) });
            return response.json();
        }""",
        LICENSE_A["id"],
    )
    assert answer.get("data") is None, answer
    assert answer["errors"][0]["extensions"]["code"] == "FORBIDDEN", answer
    page.close()


def report_failure(contexts):
    """Screenshots and text of every open page, for the failure report."""
    pages = [page for context in contexts for page in context.pages]
    for n, page in enumerate(pages):
        path = os.path.join(SHOTS, f"failure-{n}.png")
        page.screenshot(path=path)
        print(f"failure page {n}: {page.url} (screenshot {path})\n{page.inner_text('body')[:3000]}", flush=True)
    print(f"errors in the pages: {page_errors}\nrequests off the origin: {outside_requests}", flush=True)


def main():
    os.makedirs(SHOTS, exist_ok=True)
    # Generous waits: the suite runs many servers at once on two cores.
    expect.set_options(timeout=30000)
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        context = browser.new_context(viewport={"width": 1280, "height": 860}, device_scale_factor=1)
        context.set_default_timeout(30000)
        watch(context)
        read_only = browser.new_context(viewport={"width": 1280, "height": 860})
        read_only.set_default_timeout(30000)
        watch(read_only)
        try:
            graphiql(context, sign_in_token(CONFIG["admin"]))
            admin_flow(context)
            read_only_flow(read_only)
        except Exception:
            report_failure([context, read_only])
            raise
        browser.close()
    assert not outside_requests, f"requests off the server's origin: {outside_requests}"
    assert not page_errors, f"errors in the pages: {page_errors}"
    print("console browser test: all steps passed", flush=True)


def sign_in_token(user):
    """A session token for GraphiQL's headers, from the login mutation."""
    body = json.dumps({
        "query": "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
        "variables": {"e": user["email"], "p": user["password"]},
    }).encode()
    request = urllib.request.Request(f"{BASE}/graphql", data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as response:
        answer = json.load(response)
    assert "errors" not in answer, answer
    return answer["data"]["login"]["token"]


if __name__ == "__main__":
    main()
