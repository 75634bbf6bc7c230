"""The staff console and GraphiQL in headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright; it never downloads a browser). Run by tests/tests/e2e/console.rs with one argument, a
JSON file naming the server, two staff users (ADMIN, READ_ONLY), license A (99 of 100 seats
taken) and license B (0 of 1), and where screenshots go.

It also names license C (3 of 5 seats, with its device ids) for the staff actions, the open
billing drift rows (with the action each one's explanation names), and where to save the
refresh file the page offers.

Steps, each failing loudly:
  1. GraphiQL: a subscription typed into it receives the alert raised when license B reaches
     its cap (the websocket authenticates with the Authorization typed in its headers editor).
  2. The console as ADMIN: sign in with email and password; the 100th activation of license A
     makes its ACTIVATION_LIMIT_REACHED alert appear live (no reload); acknowledge it; open the
     license: "100/100" and its 100 devices; filter the licenses; acknowledge the open anomaly
     with a note; the billing drift page shows every open row with its explanation and action;
     on license C's page suspend (with a reason), reinstate, renew, release a device and export
     another's refresh file, each click's effect read back through the GraphQL API. A
     screenshot of every page.
  3. The console as READ_ONLY: no mutating button on any page, and a suspension forged from the
     page's own token is refused with FORBIDDEN.
  4. Every request the browser made went to the server itself, and no page logged an error.
"""

import json
import os
import re
import shutil
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

from playwright.sync_api import expect, sync_playwright

CONFIG = json.load(open(sys.argv[1]))
BASE = CONFIG["base_url"]
ORIGIN = urlsplit(BASE).netloc
SHOTS = CONFIG["screenshots"]
DOCS = CONFIG.get("docs")
LICENSE_A = CONFIG["license_a"]
LICENSE_B = CONFIG["license_b"]
LICENSE_C = CONFIG["license_c"]
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


def graphql(token, query, variables=None):
    """One operation through the API with a bearer token; returns `data`, failing on errors."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{BASE}/graphql", data=body, headers={
        "content-type": "application/json", "authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=20) as response:
        answer = json.load(response)
    assert "errors" not in answer, answer
    return answer["data"]


def until(what, read, check, timeout=30):
    """Reads `read()` every 100 ms until `check` holds of it (then returns it), at most
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {value}")
        time.sleep(0.1)


def instant(value):
    """An API DateTime as an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def shown(moment):
    """A datetime as the console's format.js `date` shows it: `2026-12-03 10:20 UTC`."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def screenshot(page, name, docs=True):
    path = os.path.join(SHOTS, f"{name}.png")
    page.screenshot(path=path)
    if DOCS and docs:
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


def billing_drift(page):
    step("console: the billing drift page shows the open rows with explanation and action")
    page.get_by_role("link", name="Billing drift", exact=True).click()
    page.wait_for_selector("#billing-title")
    expect(page.locator("table.list tbody tr[data-drift]")).to_have_count(len(CONFIG["drift"]))
    for drift in CONFIG["drift"]:
        row = page.locator(f'tr[data-drift="{drift["id"]}"]')
        expect(row).to_be_visible()
        expect(row.locator(".badge")).to_have_text(drift["kind"].replace("_", " "))
        explanation = row.locator("td").nth(3)
        expect(explanation).to_contain_text(drift["explanation"])
        expect(explanation).to_contain_text(drift["action"])
        expect(explanation.locator(".todo")).to_have_text("Needs a person: see above.")
        if drift["license"]:
            expect(row.locator(f'a[href="#/licenses/{drift["license"]["id"]}"]')).to_have_text(drift["license"]["key"])
        expect(row.locator("td").nth(2)).to_have_text(drift["subscriptionId"] or "\u2014")
    expect(page.locator(".error")).to_have_count(0)
    screenshot(page, "billing")


LICENSE_C_QUERY = """query($id: ID) { license(id: $id) { status statusReason expiresAt activeDevices
  devices(first: 10) { nodes { id status } } } }"""


def license_actions(page, token):
    """Clicks each staff action on license C's page and reads its effect back through the API."""
    license_id = LICENSE_C["id"]
    released, exported = LICENSE_C["devices"][0], LICENSE_C["devices"][1]

    def read():
        return graphql(token, LICENSE_C_QUERY, {"id": license_id})["license"]

    def device_status(license, device):
        return next(d["status"] for d in license["devices"]["nodes"] if d["id"] == device)

    step("console: license C's page")
    page.goto(f"{BASE}/console#/licenses/{license_id}")
    title = page.locator("#license-title")
    expect(title.locator(".badge")).to_have_text("ACTIVE")
    seats = page.locator(".facts .activations .count")
    expect(seats).to_have_text("3/5")
    expect(page.locator("tr[data-device]")).to_have_count(3)
    action = lambda label: page.locator(f'.actions button[data-action="{label}"]')

    step("console: suspend with a reason")
    page.get_by_label("Reason", exact=True).fill(LICENSE_C["suspend_reason"])
    action("Suspend").click()
    expect(title.locator(".badge")).to_have_text("SUSPENDED")
    expect(page.get_by_text(f'Reason: {LICENSE_C["suspend_reason"]}')).to_be_visible()
    expect(action("Suspend")).to_have_count(0)
    until("the suspension in the API", read,
          lambda l: (l["status"], l["statusReason"]) == ("SUSPENDED", LICENSE_C["suspend_reason"]))

    step("console: reinstate")
    action("Reinstate").click()
    expect(title.locator(".badge")).to_have_text("ACTIVE")
    expect(action("Reinstate")).to_have_count(0)
    expect(action("Suspend")).to_be_visible()
    expect(page.get_by_label("Reason", exact=True)).to_have_value("")  # not the last suspension's
    until("the reinstatement in the API", read, lambda l: (l["status"], l["statusReason"]) == ("ACTIVE", None))

    step("console: renew adds one term to the expiry")
    before = instant(read()["expiresAt"])
    expires = page.locator(".facts > div", has=page.locator("dt", has_text="Expires")).locator("dd")
    expect(expires).to_have_text(shown(before))
    # The reinstatement's reload must be over: a click on a button being re-rendered is lost,
    # and renewing is not safe to repeat.
    page.wait_for_load_state("networkidle")
    expect(action("Renew")).to_be_enabled()
    action("Renew").click()
    renewed = until("the renewal in the API", read, lambda l: instant(l["expiresAt"]) != before)
    after = instant(renewed["expiresAt"])
    assert after - before == timedelta(seconds=LICENSE_C["term_seconds"]), f"{before} -> {after}"
    expect(expires).to_have_text(shown(after))

    step("console: release a device frees its seat")
    row = page.locator(f'tr[data-device="{released}"]')
    row.get_by_role("button", name="Release").click()
    expect(row.locator(".badge")).to_have_text("RELEASED")
    expect(row.locator("button[data-action]")).to_have_count(0)
    expect(seats).to_have_text("2/5")
    until("the release in the API", read,
          lambda l: l["activeDevices"] == 2 and device_status(l, released) == "RELEASED"
          and device_status(l, exported) in ("ACTIVE", "PENDING_SYNC"))

    step("console: export another device's refresh file")
    page.locator(f'tr[data-device="{exported}"]').get_by_role("button", name="Export refresh file").click()
    region = page.get_by_role("region", name="Refresh file")
    text_box = region.get_by_label(f"Refresh file for device {exported}")
    expect(text_box).to_have_value(re.compile(r"^-----BEGIN LICENSE FILE-----\n"))
    text = text_box.input_value()
    assert text.rstrip("\n").endswith("-----END LICENSE FILE-----"), text
    with page.expect_download() as download:
        region.get_by_role("link", name="Download").click()
    assert download.value.suggested_filename == f"refresh-{exported}.lic", download.value.suggested_filename
    offered = open(download.value.path(), encoding="utf-8").read()
    assert offered == text, f"the download is not the file shown:\n{offered}\n{text}"
    with open(CONFIG["refresh_file"], "w", encoding="utf-8") as out:
        out.write(offered)
    # The file is for the license as it is now: read back, nothing else changed.
    license = read()
    assert (license["status"], instant(license["expiresAt"]), license["activeDevices"]) == ("ACTIVE", after, 2), license
    screenshot(page, "license-actions", docs=False)


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

    billing_drift(page)
    license_actions(page, sign_in_token(CONFIG["admin"]))
    page.close()


def read_only_flow(context):
    step("console: READ_ONLY sees no mutating button")
    page = context.new_page()
    sign_in(page, CONFIG["read_only"])
    expect(page.locator("[data-role]")).to_have_text("READ_ONLY")
    # Each `ready` selector matches only once the page's data has rendered, in the same render
    # that would draw the action buttons (license B's alert is still open: READ_ONLY sees "Open"
    # where ADMIN saw "Acknowledge").
    for route, ready in [("alerts", "tr[data-alert] >> text=Open"),
                         ("anomalies", "article[data-anomaly], p.empty"),
                         ("licenses", "tr[data-license]"),
                         (f"licenses/{LICENSE_A['id']}", "tr[data-device]"),
                         ("billing", "tr[data-drift]")]:
        page.goto(f"{BASE}/console#/{route}")
        page.wait_for_selector(ready, timeout=30000)
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
