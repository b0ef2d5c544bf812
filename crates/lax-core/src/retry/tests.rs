use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tower_test::mock;

use super::{RetryConfig, RetryLayer, RetryPolicy};
use crate::{
    breaker::error::CircuitOpen,
    error::{BoxError, Error, ErrorKind},
    message::{PublishRequest, Receipt, Tier},
    timeout::{TimeoutLayer, error::Elapsed},
};

type Handle = mock::Handle<PublishRequest, Receipt>;

const EXACT: RetryConfig = RetryConfig {
    max_attempts: 3,
    first_delay: Duration::from_millis(100),
    multiplier: 2.0,
    max_delay: Duration::from_secs(5),
    jitter: 0.0,
    deadline: None,
};

/// Starts `request` through a retry layer over a mock; returns the publish's task.
fn spawn_publish(
    config: RetryConfig,
    request: PublishRequest,
) -> (tokio::task::JoinHandle<Result<Receipt, BoxError>>, Handle) {
    let (inner, handle) = mock::pair();
    let service = RetryLayer::new(config).unwrap().layer(inner);
    (tokio::spawn(service.oneshot(request)), handle)
}

/// Answers each attempt with the next error of `errors` (then success), returning the
/// requests received and the time since `start` each arrived at.
async fn answer(
    handle: &mut Handle,
    start: Instant,
    errors: Vec<Error>,
) -> Vec<(PublishRequest, Duration)> {
    let mut seen = Vec::new();
    let mut errors = errors.into_iter();
    while let Some((request, respond)) = handle.next_request().await {
        seen.push((request.clone(), start.elapsed()));
        match errors.next() {
            Some(e) => respond.send_error(e),
            None => {
                respond.send_response(Receipt::direct(request.message_id));
                break;
            }
        }
    }
    seen
}

fn request() -> PublishRequest {
    PublishRequest::new("orders.created", "{}").with_tier(Tier::Persistent)
}

fn unavailable(n: usize) -> Vec<Error> {
    (0..n)
        .map(|_| Error::unavailable("connection refused"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_schedule_doubles_and_the_message_id_never_changes() {
    let config = RetryConfig {
        max_attempts: 4,
        ..EXACT
    };
    let request = request();
    let id = request.message_id.clone();
    let start = Instant::now();
    let (publish, mut handle) = spawn_publish(config, request);
    let seen = answer(&mut handle, start, unavailable(3)).await;
    let receipt = publish.await.unwrap().unwrap();
    assert_eq!(receipt.message_id, id);

    let times: Vec<_> = seen.iter().map(|(_, at)| *at).collect();
    assert_eq!(
        times,
        [0, 100, 300, 700].map(Duration::from_millis).to_vec(),
        "waits of 0.1 s, 0.2 s and 0.4 s"
    );
    assert!(
        seen.iter()
            .all(|(r, _)| r.message_id == id && r.dedup_key() == id)
    );
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts_with_the_last_error() {
    let start = Instant::now();
    let (publish, mut handle) = spawn_publish(RetryConfig::default(), request());
    let seen = answer(&mut handle, start, unavailable(10)).await;
    let err = publish.await.unwrap().unwrap_err();
    assert_eq!(
        seen.len(),
        3,
        "the contract's retry_attempts 3 = 3 attempts in all"
    );
    assert_eq!(Error::from_boxed(err).kind(), ErrorKind::Unavailable);
}

#[tokio::test(start_paused = true)]
async fn jitter_only_shortens_the_waits() {
    let config = RetryConfig {
        jitter: 0.5,
        ..EXACT
    };
    let mut first_waits = Vec::new();
    for _ in 0..30 {
        let start = Instant::now();
        let (publish, mut handle) = spawn_publish(config, request());
        let seen = answer(&mut handle, start, unavailable(2)).await;
        publish.await.unwrap().unwrap();
        let first = seen[1].1;
        let second = seen[2].1 - seen[1].1;
        assert!(
            (Duration::from_millis(50)..=Duration::from_millis(100)).contains(&first),
            "{first:?}"
        );
        assert!(
            (Duration::from_millis(100)..=Duration::from_millis(200)).contains(&second),
            "{second:?}"
        );
        first_waits.push(first);
    }
    first_waits.dedup();
    assert!(first_waits.len() > 1, "jitter varies the waits");
}

#[test]
fn delays_are_capped_at_max_delay() {
    let policy = RetryPolicy::new(RetryConfig::default()).unwrap();
    let delays: Vec<_> = (1..=8).map(|n| policy.scheduled_delay(n)).collect();
    assert_eq!(
        delays,
        [100, 200, 400, 800, 1600, 3200, 5000, 5000]
            .map(Duration::from_millis)
            .to_vec()
    );
    assert_eq!(policy.scheduled_delay(u32::MAX), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn errors_that_are_not_retryable_are_returned_at_once() {
    let not_retryable: Vec<fn() -> BoxError> = vec![
        || Error::rejected("stream has 1 replica").into(),
        || Error::invalid_input("empty subject").into(),
        || CircuitOpen::new("broker").into(),
        || Error::closed().into(),
    ];
    for make in not_retryable {
        let (inner, mut handle) = mock::pair::<PublishRequest, Receipt>();
        let service = RetryLayer::new(EXACT).unwrap().layer(inner);
        let publish = tokio::spawn(service.oneshot(request()));
        let (_, respond) = handle.next_request().await.unwrap();
        let expected = Error::classify(make().as_ref()).0;
        respond.send_error(make());
        let err = publish.await.unwrap().unwrap_err();
        assert_eq!(Error::from_boxed(err).kind(), expected);
        assert!(
            handle.next_request().await.is_none(),
            "{expected:?} was retried"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn timeouts_and_overload_are_retried() {
    let start = Instant::now();
    let (publish, mut handle) = spawn_publish(EXACT, request());
    let errors = vec![
        Error::timed_out("no ack"),
        Error::new(ErrorKind::Overloaded, "broker buffer full"),
    ];
    let seen = answer(&mut handle, start, errors).await;
    publish.await.unwrap().unwrap();
    assert_eq!(seen.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_per_message_attempts_override_the_policy() {
    for (attempts, expected) in [(1, 1), (0, 1), (5, 5)] {
        let start = Instant::now();
        let request = request().with_options(
            crate::message::PublishOptions::tier(Tier::Persistent).with_retry_attempts(attempts),
        );
        let (publish, mut handle) = spawn_publish(EXACT, request);
        let seen = answer(&mut handle, start, unavailable(10)).await;
        publish.await.unwrap().unwrap_err();
        assert_eq!(seen.len(), expected, "retry_attempts {attempts}");
    }
}

#[tokio::test(start_paused = true)]
async fn no_backoff_runs_past_the_message_timeout() {
    let config = RetryConfig {
        max_attempts: 10,
        ..EXACT
    };
    // 0 ms: fail; wait 100 ms; 100 ms: fail; a 200 ms wait would end at 300 ms > 250 ms.
    let start = Instant::now();
    let request = request().with_timeout(Duration::from_millis(250));
    let (publish, mut handle) = spawn_publish(config, request);
    let seen = answer(&mut handle, start, unavailable(10)).await;
    let err = publish.await.unwrap().unwrap_err();
    assert_eq!(seen.len(), 2);
    assert_eq!(Error::from_boxed(err).kind(), ErrorKind::Unavailable);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn every_attempt_carries_the_deadline_fixed_when_the_publish_starts() {
    let config = RetryConfig {
        deadline: Some(Duration::from_secs(2)),
        ..EXACT
    };
    let start = Instant::now();
    let (publish, mut handle) = spawn_publish(config, request());
    let seen = answer(&mut handle, start, unavailable(2)).await;
    publish.await.unwrap().unwrap();
    assert_eq!(seen.len(), 3);
    for (attempt, _) in &seen {
        assert_eq!(attempt.deadline, Some(start + Duration::from_secs(2)));
    }
    // A deadline the caller fixed is kept, and wins over the timeout.
    let fixed = start + Duration::from_millis(700);
    let request = request()
        .with_timeout(Duration::from_secs(9))
        .with_deadline(fixed);
    let (publish, mut handle) = spawn_publish(config, request);
    let (attempt, respond) = handle.next_request().await.unwrap();
    assert_eq!(attempt.deadline, Some(fixed));
    respond.send_response(Receipt::direct(attempt.message_id));
    publish.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn over_a_timeout_layer_an_attempt_still_running_at_the_deadline_is_cut_off() {
    let config = RetryConfig {
        deadline: Some(Duration::from_secs(2)),
        ..EXACT
    };
    let start = Instant::now();
    let (inner, mut handle) = mock::pair::<PublishRequest, Receipt>();
    // Per attempt 5 s, but the publish's deadline is 2 s away: the deadline wins.
    let service = tower::ServiceBuilder::new()
        .layer(RetryLayer::new(config).unwrap())
        .layer(TimeoutLayer::new(Duration::from_secs(5)))
        .service(inner);
    let publish = tokio::spawn(service.oneshot(request()));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_error(Error::timed_out("no ack"));
    let (_, _never_answered) = handle.next_request().await.unwrap();
    let err = publish.await.unwrap().unwrap_err();
    let elapsed = err.downcast_ref::<Elapsed>().expect("Elapsed");
    // The second attempt started after the 100 ms backoff.
    assert_eq!(elapsed.after(), Duration::from_millis(1_900));
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[test]
fn invalid_configs_are_config_errors() {
    let bad = [
        RetryConfig {
            max_attempts: 0,
            ..EXACT
        },
        RetryConfig {
            multiplier: 0.5,
            ..EXACT
        },
        RetryConfig {
            multiplier: f64::NAN,
            ..EXACT
        },
        RetryConfig {
            jitter: 1.5,
            ..EXACT
        },
        RetryConfig {
            first_delay: Duration::from_secs(10),
            ..EXACT
        },
    ];
    for config in bad {
        assert_eq!(
            RetryLayer::new(config).unwrap_err().kind(),
            ErrorKind::Config
        );
    }
}

#[tokio::test(start_paused = true)]
async fn each_attempt_is_an_event_inside_the_publish_span() {
    use tracing::Instrument as _;

    use crate::trace::capture::Capture;

    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.clone());
    let span = tracing::info_span!("lax.publish", attempts = tracing::field::Empty);
    let (inner, mut handle) = mock::pair();
    let service = RetryLayer::new(EXACT).unwrap().layer(inner);
    // The publish runs in the span, as the client's does; the mock answers outside it.
    let publish = service.oneshot(request()).instrument(span);
    let answered = answer(
        &mut handle,
        Instant::now(),
        vec![Error::unavailable("connection reset")],
    );
    let (receipt, seen) = tokio::join!(publish, answered);
    receipt.unwrap();
    assert_eq!(seen.len(), 2);

    let captured = capture.captured();
    let attempts: Vec<_> = captured
        .events
        .iter()
        .filter(|event| event.name == "lax.publish.attempt")
        .collect();
    assert_eq!(attempts.len(), 2, "{:#?}", captured.events);
    let field = |at: usize, name: &str| attempts[at].field(name).map(str::to_owned);
    assert_eq!(field(0, "attempt").as_deref(), Some("1"));
    assert_eq!(field(0, "outcome").as_deref(), Some("error"));
    assert_eq!(field(0, "retryable").as_deref(), Some("true"));
    assert_eq!(field(0, "delay").as_deref(), Some("100ms"));
    assert!(field(0, "error").unwrap().contains("connection reset"));
    assert_eq!(field(1, "attempt").as_deref(), Some("2"));
    assert_eq!(field(1, "outcome").as_deref(), Some("ok"));
    let publish_span = captured
        .spans
        .iter()
        .position(|span| span.name == "lax.publish")
        .unwrap();
    assert!(
        attempts
            .iter()
            .all(|event| event.within == Some(publish_span))
    );
    assert_eq!(captured.spans[publish_span].field("attempts"), Some("2"));
}
