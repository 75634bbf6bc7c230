//! Waiting for something observable to happen, instead of sleeping and hoping.

use std::time::{Duration, Instant};

/// Waits up to `timeout` for `check` to return `Some`, polling every 100 ms.
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
