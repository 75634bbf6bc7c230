# The webhook receiver of the end-to-end tests: an aiohttp server on 127.0.0.1:<port> (run with the
# localstripe venv's python, which has aiohttp). Usage: python webhook_receiver.py PORT
#
#   POST /hooks/<name>     a delivery. Logged on arrival (so a test can kill the sender mid-request),
#                          its Licensing-Signature checked with Python's own hmac against the hook's
#                          secret, then answered as the hook is configured.
#   PUT  /_config/<name>   {"secret": "whsec_...", "fail_first": 3, "status": 503, "delay": 2.5},
#                          merged into the hook's configuration: answer 500 to the first
#                          `fail_first` deliveries, `status` (default 200) to the others, each
#                          after `delay` seconds.
#   GET  /_log/<name>      every delivery so far, oldest first: {"event_id", "event_type",
#                          "signature", "verified", "body", "arrived", "answered", "finished"}
#                          (times in Unix seconds; `answered` is null while the request is open).
import asyncio, hashlib, hmac, json, sys, time

from aiohttp import web

config, log = {}, {}


def verify(secret, header, body):
    """Stripe-style: `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, compared in constant time."""
    if not secret or not header:
        return False
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    if "t" not in parts or "v1" not in parts:
        return False
    expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


async def deliver(request):
    name = request.match_info["name"]
    hook = config.get(name, {})
    body = await request.read()
    entry = {
        "event_id": request.headers.get("Licensing-Event-Id"),
        "event_type": request.headers.get("Licensing-Event-Type"),
        "signature": request.headers.get("Licensing-Signature"),
        "verified": verify(hook.get("secret"), request.headers.get("Licensing-Signature"), body),
        "body": body.decode("utf-8", "replace"),
        "arrived": time.time(),
        "answered": None,
        "finished": None,
    }
    entries = log.setdefault(name, [])
    entries.append(entry)
    if hook.get("delay"):
        await asyncio.sleep(float(hook["delay"]))
    status = 500 if len(entries) <= int(hook.get("fail_first", 0)) else int(hook.get("status", 200))
    entry["answered"], entry["finished"] = status, time.time()
    return web.Response(status=status, text="ok" if status < 300 else "receiver says no (attempt %d)" % len(entries))


async def configure(request):
    config.setdefault(request.match_info["name"], {}).update(await request.json())
    return web.json_response({})


async def read_log(request):
    return web.json_response(log.get(request.match_info["name"], []))


app = web.Application(client_max_size=4 * 1024 * 1024)
app.add_routes([
    web.post("/hooks/{name}", deliver),
    web.put("/_config/{name}", configure),
    web.get("/_log/{name}", read_log),
])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
