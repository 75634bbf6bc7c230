//! A dashboard's live alert feed: a websocket subscription to `alerts`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::TestServer;

/// A dashboard's websocket subscribed to `alerts` (the `graphql-transport-ws` protocol). A
/// task reads it all the time, as a real client does (the server drops a socket whose
/// transport pings go unanswered).
pub struct AlertSubscriber {
    messages: tokio::sync::mpsc::UnboundedReceiver<Value>,
    reader: tokio::task::JoinHandle<()>,
}

impl AlertSubscriber {
    /// Connects to `/graphql/ws` with `token` in the `connection_init` payload and sends
    /// `document` (e.g. `subscription { alerts { kind } }`).
    ///
    /// # Errors
    /// What the server answered instead of accepting the subscription (a closed connection, an
    /// error).
    pub async fn connect(server: &TestServer, token: Option<&str>, document: &str) -> Result<Self, String> {
        use futures::{SinkExt as _, StreamExt as _};
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        use tokio_tungstenite::tungstenite::http::HeaderValue;

        let url = format!("{}/graphql/ws", server.base_url.replacen("http", "ws", 1));
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("graphql-transport-ws"),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket upgrade");
        let init = token.map_or_else(|| json!({}), |t| json!({ "Authorization": format!("Bearer {t}") }));
        for message in [
            json!({ "type": "connection_init", "payload": init }),
            json!({ "id": "1", "type": "subscribe", "payload": { "query": document } }),
        ] {
            socket.send(Message::text(message.to_string())).await.unwrap();
        }
        let (sender, messages) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(frame) = socket.next().await {
                let message: Value = match frame {
                    Ok(Message::Text(text)) => serde_json::from_str(&text).unwrap(),
                    Ok(Message::Close(frame)) => json!({ "type": "closed", "payload": format!("{frame:?}") }),
                    Ok(_) => continue,
                    Err(e) => json!({ "type": "closed", "payload": e.to_string() }),
                };
                if message["type"] == "ping" {
                    let _ = socket.send(Message::text(json!({ "type": "pong" }).to_string())).await;
                } else if sender.send(message).is_err() {
                    return;
                }
            }
        });
        let mut subscriber = Self { messages, reader };
        match subscriber.next_message(Duration::from_secs(10)).await {
            Some(message) if message["type"] == "connection_ack" => {}
            other => return Err(format!("{other:?}")),
        }
        // An error answers at once; an accepted subscription stays quiet.
        match subscriber.next_message(Duration::from_millis(500)).await {
            Some(message) => Err(message.to_string()),
            None => Ok(subscriber),
        }
    }

    /// The next alert delivered within `timeout`.
    pub async fn next_alert(&mut self, timeout: Duration) -> Option<Value> {
        let message = self.next_message(timeout).await?;
        assert_eq!(message["type"], "next", "{message}");
        assert!(message["payload"]["errors"].is_null(), "{message}");
        Some(message["payload"]["data"]["alerts"].clone())
    }

    /// The next protocol message within `timeout` (`next`, `error`, `complete`, `closed`).
    pub async fn next_message(&mut self, timeout: Duration) -> Option<Value> {
        tokio::time::timeout(timeout, self.messages.recv()).await.ok().flatten()
    }
}

impl Drop for AlertSubscriber {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
