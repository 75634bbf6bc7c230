//! A real SMTP server for the worker to deliver to, and the parsing of what it received.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::eventually;
use crate::server::free_port;

/// A real SMTP server on a free loopback port (Debian's `python3-aiosmtpd` with
/// `tests/support/licensing_sink.py`): keeps every accepted message, refuses recipients
/// starting with `reject` with 550, and can be stopped and started again on the same port.
pub struct SmtpSink {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    delay_seconds: u32,
}

impl SmtpSink {
    /// Starts a sink that accepts at once.
    #[must_use]
    pub fn start() -> Self {
        Self::start_with_delay(0)
    }

    /// Starts a sink that takes `delay_seconds` over each message's DATA.
    #[must_use]
    pub fn start_with_delay(delay_seconds: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("licensing_sink.py"),
            include_str!("../support/licensing_sink.py"),
        )
        .unwrap();
        let mut sink = Self {
            child: None,
            port: free_port(),
            dir,
            delay_seconds,
        };
        sink.resume();
        sink
    }

    /// `smtp://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Stops accepting connections (the port stays reserved for [`SmtpSink::resume`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts (again) on the same port and waits until it answers.
    pub fn resume(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("sink.log")).unwrap();
        let child = Command::new("/usr/bin/python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "licensing_sink.Sink"])
            .arg(self.dir.path().join("maildir"))
            .arg(self.delay_seconds.to_string())
            .env("PYTHONPATH", self.dir.path())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the SMTP sink: apt-get install python3-aiosmtpd (scripts/test.sh does)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the SMTP sink did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether a message is being received right now (with a delay).
    #[must_use]
    pub fn receiving(&self) -> bool {
        self.dir.path().join("maildir").join("receiving").exists()
    }

    /// Every message accepted so far, parsed.
    #[must_use]
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("maildir").join("new"))
            .map(|dir| dir.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
    }

    /// Waits until at least `n` messages arrived; returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        eventually(timeout, &format!("{n} emails"), || async {
            let messages = self.messages();
            (messages.len() >= n).then_some(messages)
        })
        .await
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A message's subject, text body, attachments (name, text) and `Message-ID`.
#[must_use]
pub fn parse_email(raw: &[u8]) -> (String, String, Vec<(String, String)>, String) {
    use mail_parser::MimeHeaders as _;
    let message = mail_parser::MessageParser::default()
        .parse(raw)
        .expect("a MIME message");
    let attachments = message
        .attachments()
        .map(|a| {
            (
                a.attachment_name().unwrap_or_default().to_owned(),
                String::from_utf8_lossy(a.contents()).into_owned(),
            )
        })
        .collect();
    (
        message.subject().unwrap_or_default().to_owned(),
        message.body_text(0).unwrap_or_default().into_owned(),
        attachments,
        message.message_id().unwrap_or_default().to_owned(),
    )
}
