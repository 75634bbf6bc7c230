# The fake Stripe of the end-to-end tests: localstripe's aiohttp app on 127.0.0.1:<port> only
# (its own CLI binds every interface). Usage: python localstripe_serve.py PORT STATE_DIR
#
# localstripe keeps its objects in one pickle at /tmp/localstripe.pickle, shared by every instance on
# the machine, and its webhooks in memory only. Here both live in STATE_DIR instead, and are loaded
# again on start: a server killed and started again on the same STATE_DIR (a billing outage) comes
# back with its customers, plans, subscriptions and webhooks, like the real Stripe would.
import json, logging, os, pickle, sys

from aiohttp import web
import localstripe.resources as resources
import localstripe.server as server
import localstripe.webhooks as webhooks

port, state_dir = int(sys.argv[1]), sys.argv[2]
os.makedirs(state_dir, exist_ok=True)
store_path = os.path.join(state_dir, "store.pickle")
webhooks_path = os.path.join(state_dir, "webhooks.json")


def write_atomically(path, data):
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


def dump_to_disk(self):
    write_atomically(store_path, pickle.dumps(dict(self), protocol=pickle.HIGHEST_PROTOCOL))


def try_load_from_disk(self):
    try:
        with open(store_path, "rb") as f:
            old = pickle.load(f)
    except FileNotFoundError:
        return
    dict.clear(self)
    dict.update(self, old)


resources.Store.dump_to_disk = dump_to_disk
resources.Store.try_load_from_disk = try_load_from_disk


def register_webhook(id, url, secret, events):
    webhooks.register_webhook(id, url, secret, events)
    saved = {i: {"url": w.url, "secret": w.secret, "events": w.events} for i, w in webhooks._webhooks.items()}
    write_atomically(webhooks_path, json.dumps(saved).encode())


# `POST /_config/webhooks/<id>` calls the name imported into localstripe.server.
server.register_webhook = register_webhook

resources.store.try_load_from_disk()
if os.path.exists(webhooks_path):
    with open(webhooks_path) as f:
        for id, w in json.load(f).items():
            webhooks.register_webhook(id, w["url"], w["secret"], w["events"])

# Like localstripe's start(): the access log and webhook deliveries on stderr.
logger = logging.getLogger("aiohttp.access")
logger.setLevel(logging.DEBUG)
logger.addHandler(logging.StreamHandler())
web.run_app(server.app, host="127.0.0.1", port=port, access_log=logger, print=None)
