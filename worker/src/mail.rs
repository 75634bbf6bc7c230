//! Turning an outbox row into an email and handing it to the transport: templates (text and
//! HTML, rendered with minijinja from the row's `kind` and `context`), attachments, the row's
//! stable Message-ID, and either SMTP (`SMTP_URL`) or `.eml` files in `DATA_DIR/outbox/`.

use std::path::PathBuf;

use domain::outbox::Delivery;
use entity::email_outbox;
use lettre::message::header::ContentType;
use lettre::message::{Attachment as MailAttachment, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use minijinja::Environment;

/// The templates, by outbox `kind`: `<kind>.txt` and `<kind>.html`.
const TEMPLATES: &[(&str, &str)] = &[
    ("renewal_notice.txt", include_str!("../templates/renewal_notice.txt")),
    ("renewal_notice.html", include_str!("../templates/renewal_notice.html")),
    ("refresh_files.txt", include_str!("../templates/refresh_files.txt")),
    ("refresh_files.html", include_str!("../templates/refresh_files.html")),
    ("alert_digest.txt", include_str!("../templates/alert_digest.txt")),
    ("alert_digest.html", include_str!("../templates/alert_digest.html")),
];

/// Where emails go.
pub enum Transport {
    /// An SMTP server.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// One `<row id>.eml` file per email in this directory.
    Files(PathBuf),
}

/// An outbox row rendered: what its recipient reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject line (written by the change that promised the email).
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body.
    pub html: String,
}

/// The email templates, parsed once.
pub struct Templates(Environment<'static>);

impl Templates {
    /// Parses every template.
    ///
    /// # Errors
    /// A template that does not parse.
    pub fn new() -> anyhow::Result<Self> {
        let mut templates = Environment::new();
        for (name, source) in TEMPLATES {
            templates.add_template(name, source)?;
        }
        Ok(Self(templates))
    }

    /// Renders a row's subject and bodies from its `kind` and `context`.
    ///
    /// # Errors
    /// An unknown kind, or a context the template cannot render.
    pub fn render(&self, email: &email_outbox::Model) -> Result<Rendered, String> {
        let render = |ext: &str| {
            self.0
                .get_template(&format!("{}.{ext}", email.kind))
                .and_then(|t| t.render(&email.context))
                .map_err(|e| format!("template {}.{ext}: {e}", email.kind))
        };
        Ok(Rendered {
            subject: email.subject.clone(),
            text: render("txt")?,
            html: render("html")?,
        })
    }
}

/// Renders and sends outbox rows.
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    templates: Templates,
}

impl Mailer {
    /// A mailer over SMTP when `smtp_url` is set (`smtp://host:port`, `smtps://...`), else
    /// writing `.eml` files to `outbox_dir`.
    ///
    /// # Errors
    /// A bad `SMTP_URL` or `MAIL_FROM`, or templates that do not parse.
    pub fn new(smtp_url: Option<&str>, outbox_dir: PathBuf, from: &str) -> anyhow::Result<Self> {
        let transport = match smtp_url {
            Some(url) => Transport::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| anyhow::anyhow!("SMTP_URL: {e}"))?
                    .timeout(Some(std::time::Duration::from_secs(20)))
                    .build(),
            ),
            None => {
                std::fs::create_dir_all(&outbox_dir)?;
                Transport::Files(outbox_dir)
            }
        };
        Ok(Self {
            transport,
            from: from.parse().map_err(|e| anyhow::anyhow!("MAIL_FROM {from:?}: {e}"))?,
            templates: Templates::new()?,
        })
    }

    /// Builds the message of a row: text and HTML bodies, attachments, its Message-ID.
    ///
    /// # Errors
    /// A row that cannot become an email (unknown kind, bad address): a permanent failure.
    pub fn message(&self, email: &email_outbox::Model) -> Result<Message, String> {
        let rendered = self.templates.render(email)?;
        let body = MultiPart::alternative_plain_html(rendered.text, rendered.html);
        let attachments = &email.attachments.0;
        let mut builder = Message::builder()
            .message_id(Some(email.message_id.clone()))
            .from(self.from.clone())
            .subject(rendered.subject);
        for to in email.to_address.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            builder = builder.to(to.parse().map_err(|e| format!("recipient {to:?}: {e}"))?);
        }
        let message = if attachments.is_empty() {
            builder.multipart(body)
        } else {
            let mut mixed = MultiPart::mixed().multipart(body);
            for a in attachments {
                let content_type = ContentType::parse(&a.content_type).unwrap_or(ContentType::TEXT_PLAIN);
                let part: SinglePart = MailAttachment::new(a.filename.clone()).body(a.content.clone(), content_type);
                mixed = mixed.singlepart(part);
            }
            builder.multipart(mixed)
        };
        message.map_err(|e| e.to_string())
    }

    /// Sends one row, classifying failures: SMTP 5xx and unbuildable messages are permanent;
    /// 4xx, refused connections and timeouts are transient.
    pub async fn send(&self, email: &email_outbox::Model) -> Delivery {
        let message = match self.message(email) {
            Ok(message) => message,
            Err(e) => return Delivery::Permanent(e),
        };
        match &self.transport {
            Transport::Smtp(smtp) => match smtp.send(message).await {
                Ok(_) => Delivery::Sent,
                Err(e) if e.is_permanent() => Delivery::Permanent(e.to_string()),
                Err(e) => Delivery::Transient(e.to_string()),
            },
            Transport::Files(dir) => {
                let path = dir.join(format!("{}.eml", email.id));
                let tmp = dir.join(format!(".{}.eml.tmp", email.id));
                let written = async {
                    tokio::fs::write(&tmp, message.formatted()).await?;
                    tokio::fs::rename(&tmp, &path).await
                }
                .await;
                match written {
                    Ok(()) => Delivery::Sent,
                    Err(e) => Delivery::Transient(format!("{}: {e}", path.display())),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The three kinds of email, rendered from fixed rows shaped like the ones `domain`
    //! promises (`sweeps.rs`, `licenses.rs`): subject, text and HTML, as insta snapshots.
    //! A changed template shows as a snapshot diff to review (`cargo insta review`); with
    //! `CI` set, insta writes nothing and the test fails.

    #![expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]

    use chrono::{DateTime, Utc};
    use entity::email_outbox;
    use entity::enums::EmailStatus;
    use serde_json::{Value, json};

    use super::{Rendered, Templates};

    fn at(rfc3339: &str) -> DateTime<Utc> {
        rfc3339.parse().unwrap()
    }

    /// An outbox row of `kind`, its ids and times fixed.
    fn row(kind: &str, subject: &str, context: Value) -> email_outbox::Model {
        email_outbox::Model {
            id: "01930000-0000-7000-8000-000000000001".into(),
            vendor_id: "01930000-0000-7000-8000-0000000000v1".into(),
            kind: kind.into(),
            to_address: "buyer@customer.test".into(),
            subject: subject.into(),
            context,
            attachments: entity::columns::AttachmentList::default(),
            status: EmailStatus::Pending,
            attempts: 0,
            last_error: None,
            message_id: "<01930000-0000-7000-8000-000000000001@licensing>".into(),
            dedupe_key: None,
            created_at: at("2026-11-24T09:00:00Z"),
            next_attempt_at: at("2026-11-24T09:00:00Z"),
            enqueued_at: None,
            sent_at: None,
        }
    }

    fn render(email: &email_outbox::Model) -> String {
        let Rendered { subject, text, html } = Templates::new().unwrap().render(email).unwrap();
        format!("subject: {subject}\n\n--- text ---\n{text}\n\n--- html ---\n{html}\n")
    }

    #[test]
    fn renewal_notice() {
        let email = row(
            "renewal_notice",
            "Your Plant Monitor license expires on 2026-12-01",
            json!({
                "customer": "Plant Co",
                "vendor": "Acme Software",
                "product": "Plant Monitor",
                "license_id": "01930000-0000-7000-8000-0000000000l1",
                "key_hint": "7QX2",
                "expires_at": "2026-12-01T12:00:00+00:00",
                "expires_on": "Tuesday 1 December 2026, 12:00 UTC",
                "days": 7,
            }),
        );
        insta::assert_snapshot!(render(&email));
    }

    #[test]
    fn refresh_files() {
        let email = row(
            "refresh_files",
            "Updated license files for Plant Monitor",
            json!({
                "customer": "Plant Co",
                "product": "Plant Monitor",
                "key_hint": "7QX2",
                "expires_at": "2027-01-30T12:00:00+00:00",
                "version": 3,
                "devices": ["line-1-press", "line-2-oven"],
            }),
        );
        insta::assert_snapshot!(render(&email));
    }

    #[test]
    fn alert_digest() {
        let email = row(
            "alert_digest",
            "[Acme Software] 2 devices stopped heartbeating, 1 emails failed",
            json!({
                "vendor": "Acme Software",
                "summary": ["2 devices stopped heartbeating", "1 emails failed"],
                "alerts": [
                    {
                        "kind": "DEVICE_DEAD",
                        "message": "Device line-1-press on license ..7QX2 stopped heartbeating (deadline 2026-11-24 08:58:00 UTC); its seat was released.",
                        "created_at": "2026-11-24T08:59:00+00:00",
                        "license_id": "01930000-0000-7000-8000-0000000000l1",
                        "device_id": "01930000-0000-7000-8000-0000000000d1",
                    },
                    {
                        "kind": "DEVICE_DEAD",
                        "message": "Device <line-2 & oven> on license ..7QX2 stopped heartbeating (deadline 2026-11-24 08:58:30 UTC); its seat was released.",
                        "created_at": "2026-11-24T08:59:30+00:00",
                        "license_id": "01930000-0000-7000-8000-0000000000l1",
                        "device_id": "01930000-0000-7000-8000-0000000000d2",
                    },
                    {
                        "kind": "EMAIL_FAILED",
                        "message": "The email \"Updated license files for Plant Monitor\" to reject@customer.test could not be delivered after 1 attempt(s): permanent error (550): mailbox unavailable",
                        "created_at": "2026-11-24T08:59:45+00:00",
                        "license_id": null,
                        "device_id": null,
                    },
                ],
            }),
        );
        insta::assert_snapshot!(render(&email));
    }
}
