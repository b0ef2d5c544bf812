//! Waiting on conditions with a deadline, polling with a short backoff instead of sleeping a
//! fixed time and hoping.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use crate::TestkitError;

const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// Polls `condition` until it returns `true`, or fails once `timeout` has passed.
///
/// The condition is polled at once, then with a backoff growing from 5 ms to 100 ms. A single
/// poll that hangs is cut off at the deadline too.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
///
/// let polls = AtomicU32::new(0);
/// lax_testkit::wait_until(Duration::from_secs(5), || async {
///     polls.fetch_add(1, Ordering::SeqCst) >= 3
/// })
/// .await
/// .expect("the condition becomes true on the fourth poll");
/// # }
/// ```
///
/// # Errors
///
/// [`TestkitError::Timeout`] when the condition is still false at the deadline.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> Result<(), TestkitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(timeout, || {
        let fut = condition();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Polls `probe` until it returns `Some(value)` and returns that value, or fails once
/// `timeout` has passed. Same polling as [`wait_until`].
///
/// # Errors
///
/// [`TestkitError::Timeout`] when the probe still returns `None` at the deadline.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut probe: F) -> Result<T, TestkitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if let Ok(Some(value)) = tokio::time::timeout(remaining, probe()).await {
            return Ok(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(TestkitError::Timeout {
                what: "condition".to_owned(),
                after: timeout,
                last_observation: None,
            });
        }
        tokio::time::sleep(backoff.min(deadline - now)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn returns_as_soon_as_true() {
        let started = Instant::now();
        wait_until(Duration::from_secs(5), || async { true })
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn times_out_when_never_true() {
        let polls = AtomicU32::new(0);
        let started = Instant::now();
        let err = wait_until(Duration::from_millis(200), || async {
            polls.fetch_add(1, Ordering::SeqCst);
            false
        })
        .await
        .unwrap_err();
        assert!(matches!(err, TestkitError::Timeout { .. }), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(polls.load(Ordering::SeqCst) >= 3);
    }

    #[tokio::test]
    async fn a_hanging_poll_is_cut_at_the_deadline() {
        let started = Instant::now();
        let result = wait_for(Duration::from_millis(100), || {
            std::future::pending::<Option<()>>()
        })
        .await;
        assert!(result.is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn wait_for_returns_the_value() {
        let polls = AtomicU32::new(0);
        let value = wait_for(Duration::from_secs(5), || async {
            let n = polls.fetch_add(1, Ordering::SeqCst);
            (n == 2).then_some(n)
        })
        .await
        .unwrap();
        assert_eq!(value, 2);
    }
}
