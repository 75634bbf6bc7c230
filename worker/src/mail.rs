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

/// Renders and sends outbox rows.
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    templates: Environment<'static>,
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
        let mut templates = Environment::new();
        for (name, source) in TEMPLATES {
            templates.add_template(name, source)?;
        }
        Ok(Self {
            transport,
            from: from.parse().map_err(|e| anyhow::anyhow!("MAIL_FROM {from:?}: {e}"))?,
            templates,
        })
    }

    /// Builds the message of a row: text and HTML bodies, attachments, its Message-ID.
    ///
    /// # Errors
    /// A row that cannot become an email (unknown kind, bad address): a permanent failure.
    pub fn message(&self, email: &email_outbox::Model) -> Result<Message, String> {
        let render = |ext: &str| {
            self.templates
                .get_template(&format!("{}.{ext}", email.kind))
                .and_then(|t| t.render(&email.context))
                .map_err(|e| format!("template {}.{ext}: {e}", email.kind))
        };
        let body = MultiPart::alternative_plain_html(render("txt")?, render("html")?);
        let attachments = &email.attachments.0;
        let mut builder = Message::builder()
            .message_id(Some(email.message_id.clone()))
            .from(self.from.clone())
            .subject(email.subject.clone());
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
