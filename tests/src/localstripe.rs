//! A real fake Stripe for the billing tests: [`LocalStripe`] runs
//! [localstripe](https://github.com/adrienverge/localstripe) (a stateful Stripe emulator,
//! installed by `scripts/test.sh` into a venv named by `LICENSING_TEST_LOCALSTRIPE_PYTHON`) on a
//! free loopback port with `tests/support/localstripe_serve.py`, and has helpers that talk to it
//! the way a Stripe client does: form-encoded bodies and `Authorization: Bearer sk_test_...`.
//!
//! What localstripe 1.15.10 does, for the tests written against it:
//! - every `/v1/` request needs an `sk_...` key (any one, Bearer or Basic); `/_config/` needs none;
//! - webhooks ([`LocalStripe::register_webhook`]) are POSTed about one second after the change, once
//!   (never retried), with `Stripe-Signature: t=<event.created>,v1=<hex HMAC-SHA256(secret,
//!   "<t>.<body>")>`; an event's `data.object` is the object as it was when the event was made;
//! - a subscription sends `customer.subscription.created` and, on DELETE,
//!   `customer.subscription.deleted` (status `canceled`, `ended_at` set, still retrievable); an
//!   update (plan switch, metadata) sends no `customer.subscription.updated`, only the `invoice.*`
//!   of a new invoice when the interval changes; metadata given to an update is ignored;
//! - `current_period_start`/`current_period_end` are top-level only (not in `items.data[]`),
//!   computed from `start_date` and the current plan's interval.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::{free_port, tail};

/// The secret API key every helper sends (localstripe accepts any key starting with `sk_`).
pub const STRIPE_TEST_KEY: &str = "sk_test_licensing";

/// A localstripe server on a free loopback port with its own state directory: keeps its
/// objects and webhooks across [`LocalStripe::stop`] and [`LocalStripe::resume`].
pub struct LocalStripe {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// The venv's python: `LICENSING_TEST_LOCALSTRIPE_PYTHON`, else where `scripts/test.sh` puts it.
fn python() -> PathBuf {
    crate::server::test_tool(
        "LICENSING_TEST_LOCALSTRIPE_PYTHON",
        "licensing-tests/localstripe/bin/python",
    )
}

impl LocalStripe {
    /// Starts a fresh server and waits until it answers.
    #[must_use]
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("localstripe_serve.py"),
            include_str!("../support/localstripe_serve.py"),
        )
        .unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut stripe = Self {
            child: None,
            port: free_port(),
            dir,
            http,
        };
        stripe.resume();
        stripe
    }

    /// `http://127.0.0.1:<port>`: the Stripe API base URL to give the code under test.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops answering, like a billing outage (the port and the state stay for
    /// [`LocalStripe::resume`]; webhooks not yet sent are lost).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts (again) on the same port with the same objects and webhooks, and waits until it
    /// answers.
    pub fn resume(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("localstripe.log"))
            .unwrap();
        let python = python();
        let mut child = Command::new(&python)
            .arg(self.dir.path().join("localstripe_serve.py"))
            .arg(self.port.to_string())
            .arg(self.dir.path().join("state"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start localstripe with {}: {e}; run scripts/test.sh, which installs it",
                    python.display()
                )
            });
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("localstripe exited with {status}:\n{}", self.log());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("localstripe did not start:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// What it printed so far (access log, webhook deliveries, tracebacks).
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("localstripe.log")).unwrap_or_default()
    }

    /// `GET <path_and_query>` with the test key; the JSON answer, failing on any error status.
    pub async fn get(&self, path_and_query: &str) -> Value {
        let req = self.http.get(format!("{}{path_and_query}", self.base_url()));
        self.send(req).await
    }

    /// `POST <path>` of a form with the test key; the JSON answer, failing on any error status.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let req = self.http.post(format!("{}{path}", self.base_url())).form(form);
        self.send(req).await
    }

    /// `DELETE <path>` with the test key; the JSON answer, failing on any error status.
    pub async fn delete(&self, path: &str) -> Value {
        let req = self.http.delete(format!("{}{path}", self.base_url()));
        self.send(req).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Value {
        let res = req
            .bearer_auth(STRIPE_TEST_KEY)
            .send()
            .await
            .expect("localstripe answers");
        let status = res.status();
        let body = res.text().await.unwrap();
        assert!(status.is_success(), "localstripe answered {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("localstripe JSON ({e}): {body}"))
    }

    /// A plan (price) `id` of `amount` cents (EUR) every `interval` (`"month"`, `"year"`, ...), with
    /// its own product; returns the plan.
    pub async fn create_plan(&self, id: &str, interval: &str, amount: u64) -> Value {
        let amount = amount.to_string();
        self.post(
            "/v1/plans",
            &[
                ("id", id),
                ("interval", interval),
                ("amount", &amount),
                ("currency", "eur"),
                ("product[name]", id),
            ],
        )
        .await
    }

    /// A customer with a chargeable Visa card as default source (localstripe has no `tok_visa`:
    /// the token is made from the test card 4242...), so its subscriptions start `active`;
    /// returns its id.
    pub async fn create_customer(&self, email: &str) -> String {
        let token = self
            .post(
                "/v1/tokens",
                &[
                    ("card[number]", "4242424242424242"),
                    ("card[exp_month]", "12"),
                    ("card[exp_year]", "2030"),
                    ("card[cvc]", "123"),
                ],
            )
            .await;
        let token = token["id"].as_str().unwrap();
        let customer = self.post("/v1/customers", &[("email", email), ("source", token)]).await;
        customer["id"].as_str().unwrap().to_owned()
    }

    /// A subscription of `customer` to `plan` with `metadata`; returns it (paid at once:
    /// `status` is `active`).
    pub async fn create_subscription(&self, customer: &str, plan: &str, metadata: &[(&str, &str)]) -> Value {
        let keys: Vec<String> = metadata.iter().map(|(k, _)| format!("metadata[{k}]")).collect();
        let mut form = vec![("customer", customer), ("items[0][plan]", plan)];
        form.extend(keys.iter().map(String::as_str).zip(metadata.iter().map(|(_, v)| *v)));
        self.post("/v1/subscriptions", &form).await
    }

    /// The subscription `id` as it is now.
    pub async fn get_subscription(&self, id: &str) -> Value {
        self.get(&format!("/v1/subscriptions/{id}")).await
    }

    /// Cancels a subscription at once (`DELETE`); returns it (`status` `canceled`).
    pub async fn cancel_subscription(&self, id: &str) -> Value {
        self.delete(&format!("/v1/subscriptions/{id}")).await
    }

    /// Moves a subscription's only item to `new_plan` (`items[0][id]` + `items[0][plan]`, as with
    /// the real Stripe); returns the subscription. Its `current_period_end` follows the new
    /// plan's interval (localstripe keeps `current_period_start`).
    pub async fn switch_plan(&self, id: &str, new_plan: &str) -> Value {
        let subscription = self.get_subscription(id).await;
        let item = subscription["items"]["data"][0]["id"].as_str().unwrap();
        self.post(
            &format!("/v1/subscriptions/{id}"),
            &[("items[0][id]", item), ("items[0][plan]", new_plan)],
        )
        .await
    }

    /// Sends every event to `url`, signed with `secret` (registering `id` again replaces it).
    pub async fn register_webhook(&self, id: &str, url: &str, secret: &str) {
        self.register_webhook_for(id, url, secret, &[]).await;
    }

    /// Sends the events of the given types (all of them if `events` is empty) to `url`, signed
    /// with `secret` (registering `id` again replaces it).
    pub async fn register_webhook_for(&self, id: &str, url: &str, secret: &str, events: &[&str]) {
        let mut form = vec![("url", url), ("secret", secret)];
        form.extend(events.iter().map(|event| ("events[]", *event)));
        let res = self
            .http
            .post(format!("{}/_config/webhooks/{id}", self.base_url()))
            .form(&form)
            .send()
            .await
            .expect("localstripe answers");
        assert!(res.status().is_success(), "register webhook: {}", res.status());
    }
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- localstripe log (tail) ----\n{}", tail(&self.log(), 100));
        }
    }
}
