use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::Layer;
use tower_test::mock;

use super::{BreakerConfig, BreakerState, CircuitBreaker, CircuitBreakerLayer, error::CircuitOpen};
use crate::{
    error::{BoxError, Error, ErrorKind},
    message::{PublishRequest, Receipt},
};

type Breaker = mock::Spawn<CircuitBreaker<mock::Mock<PublishRequest, Receipt>>>;
type Handle = mock::Handle<PublishRequest, Receipt>;

const CONFIG: BreakerConfig = BreakerConfig {
    failure_threshold: 3,
    open_timeout: Duration::from_secs(30),
    half_open_trials: 2,
    transient_grace: Duration::from_secs(15),
};

fn breaker(config: BreakerConfig) -> (CircuitBreakerLayer, Breaker, Handle) {
    let layer = CircuitBreakerLayer::new("broker", config).unwrap();
    let (service, handle) = mock::pair();
    (
        layer.clone(),
        mock::Spawn::new(layer.layer(service)),
        handle,
    )
}

/// Sends one request through and answers it with `outcome`.
async fn publish(
    service: &mut Breaker,
    handle: &mut Handle,
    outcome: Result<(), Error>,
) -> Result<Receipt, BoxError> {
    assert_ready_ok!(service.poll_ready());
    let response = service.call(PublishRequest::new("a.b", "x"));
    let (request, respond) = handle.next_request().await.unwrap();
    match outcome {
        Ok(()) => respond.send_response(Receipt::direct(request.message_id)),
        Err(e) => respond.send_error(e),
    }
    response.await
}

/// Sends one request that must fail fast, never reaching the inner service.
async fn refused(service: &mut Breaker, handle: &mut Handle) {
    handle.allow(0); // the inner service is not ready: the breaker must not care
    assert_ready_ok!(service.poll_ready());
    let err = service
        .call(PublishRequest::new("a.b", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.downcast_ref::<CircuitOpen>().unwrap().name(), "broker");
    assert_eq!(Error::from_boxed(err).kind(), ErrorKind::CircuitOpen);
    assert_pending!(handle.poll_request());
    handle.allow(u64::MAX);
}

async fn open(service: &mut Breaker, handle: &mut Handle) {
    for _ in 0..CONFIG.failure_threshold {
        publish(service, handle, Err(Error::unavailable("down")))
            .await
            .unwrap_err();
    }
}

#[tokio::test(start_paused = true)]
async fn opens_after_threshold_consecutive_failures() {
    let (layer, mut service, mut handle) = breaker(CONFIG);
    let state = layer.handle();
    publish(&mut service, &mut handle, Err(Error::timed_out("slow")))
        .await
        .unwrap_err();
    publish(&mut service, &mut handle, Err(Error::unavailable("down")))
        .await
        .unwrap_err();
    assert_eq!(state.consecutive_failures(), 2);
    // A success resets the run.
    publish(&mut service, &mut handle, Ok(())).await.unwrap();
    assert_eq!(state.consecutive_failures(), 0);
    assert_eq!(state.state(), BreakerState::Closed);

    open(&mut service, &mut handle).await;
    assert_eq!(state.state(), BreakerState::Open);
    refused(&mut service, &mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn invalid_input_and_refusals_never_trip_it() {
    let (layer, mut service, mut handle) = breaker(CONFIG);
    for _ in 0..10 {
        publish(
            &mut service,
            &mut handle,
            Err(Error::invalid_input("empty subject")),
        )
        .await
        .unwrap_err();
        publish(&mut service, &mut handle, Err(Error::rejected("no stream")))
            .await
            .unwrap_err();
    }
    assert_eq!(layer.handle().state(), BreakerState::Closed);
    assert_eq!(layer.handle().consecutive_failures(), 0);
}

#[tokio::test(start_paused = true)]
async fn open_becomes_half_open_after_the_timeout_and_closes_when_trials_pass() {
    let (layer, mut service, mut handle) = breaker(CONFIG);
    let state = layer.handle();
    open(&mut service, &mut handle).await;

    tokio::time::advance(CONFIG.open_timeout - Duration::from_millis(1)).await;
    refused(&mut service, &mut handle).await;
    assert_eq!(state.state(), BreakerState::Open);

    tokio::time::advance(Duration::from_millis(1)).await;
    // Two trials admitted concurrently; a third request meanwhile fails fast.
    let mut first = mock::Spawn::new(service.get_ref().clone());
    let mut second = mock::Spawn::new(service.get_ref().clone());
    assert_ready_ok!(first.poll_ready());
    assert_eq!(state.state(), BreakerState::HalfOpen);
    let first = first.call(PublishRequest::new("a.b", "1"));
    assert_ready_ok!(second.poll_ready());
    let second = second.call(PublishRequest::new("a.b", "2"));
    let (_, respond_first) = handle.next_request().await.unwrap();
    let (_, respond_second) = handle.next_request().await.unwrap();
    refused(&mut service, &mut handle).await;

    respond_first.send_response(Receipt::direct("1"));
    first.await.unwrap();
    assert_eq!(state.state(), BreakerState::HalfOpen);
    respond_second.send_response(Receipt::direct("2"));
    second.await.unwrap();
    assert_eq!(state.state(), BreakerState::Closed);

    publish(&mut service, &mut handle, Ok(())).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_opens_it_again_for_a_full_timeout() {
    let (layer, mut service, mut handle) = breaker(CONFIG);
    let state = layer.handle();
    open(&mut service, &mut handle).await;
    tokio::time::advance(CONFIG.open_timeout).await;

    publish(&mut service, &mut handle, Ok(())).await.unwrap();
    assert_eq!(state.state(), BreakerState::HalfOpen);
    publish(&mut service, &mut handle, Err(Error::timed_out("slow")))
        .await
        .unwrap_err();
    assert_eq!(state.state(), BreakerState::Open);

    tokio::time::advance(CONFIG.open_timeout - Duration::from_millis(1)).await;
    refused(&mut service, &mut handle).await;
    tokio::time::advance(Duration::from_millis(1)).await;
    publish(&mut service, &mut handle, Ok(())).await.unwrap();
    publish(&mut service, &mut handle, Ok(())).await.unwrap();
    assert_eq!(state.state(), BreakerState::Closed);
}

fn electing() -> Error {
    Error::unavailable("stream has no leader")
        .maybe_stored()
        .transient()
}

#[tokio::test(start_paused = true)]
async fn transient_failures_count_only_after_the_grace() {
    let (layer, mut service, mut handle) = breaker(CONFIG);
    let state = layer.handle();
    // An election: many transient answers, well past the threshold, within the grace.
    for _ in 0..4 * CONFIG.failure_threshold {
        publish(&mut service, &mut handle, Err(electing()))
            .await
            .unwrap_err();
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    assert_eq!(state.state(), BreakerState::Closed);
    assert_eq!(state.consecutive_failures(), 0);
    // A success ends the run: the next one starts a grace of its own.
    publish(&mut service, &mut handle, Ok(())).await.unwrap();
    tokio::time::advance(CONFIG.transient_grace).await;
    publish(&mut service, &mut handle, Err(electing()))
        .await
        .unwrap_err();
    assert_eq!(state.consecutive_failures(), 0);
    // Leaderless for longer than any election: the failures count, and open it.
    tokio::time::advance(CONFIG.transient_grace).await;
    for _ in 0..CONFIG.failure_threshold {
        publish(&mut service, &mut handle, Err(electing()))
            .await
            .unwrap_err();
    }
    assert_eq!(state.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_transient_answer_fails_a_trial() {
    let (layer, mut service, mut handle) = breaker(CONFIG);
    open(&mut service, &mut handle).await;
    tokio::time::advance(CONFIG.open_timeout).await;
    publish(&mut service, &mut handle, Err(electing()))
        .await
        .unwrap_err();
    assert_eq!(layer.handle().state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_or_neutral_trial_gives_its_slot_back() {
    let config = BreakerConfig {
        half_open_trials: 1,
        ..CONFIG
    };
    let (layer, mut service, mut handle) = breaker(config);
    open(&mut service, &mut handle).await;
    tokio::time::advance(CONFIG.open_timeout).await;

    // The only trial is admitted, then its caller gives up.
    assert_ready_ok!(service.poll_ready());
    let abandoned = service.call(PublishRequest::new("a.b", "x"));
    let _ = handle.next_request().await.unwrap();
    drop(abandoned);
    // Invalid input says nothing about the path: the slot comes back again.
    publish(&mut service, &mut handle, Err(Error::invalid_input("bad")))
        .await
        .unwrap_err();
    assert_eq!(layer.handle().state(), BreakerState::HalfOpen);
    publish(&mut service, &mut handle, Ok(())).await.unwrap();
    assert_eq!(layer.handle().state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn state_and_trips_are_reported_as_metrics() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (layer, mut service, mut handle) = metrics::with_local_recorder(&recorder, || {
        let layer = CircuitBreakerLayer::with_metrics_prefix("direct", CONFIG, "test").unwrap();
        let (inner, handle) = mock::pair();
        let service = mock::Spawn::new(layer.layer(inner));
        (layer, service, handle)
    });
    // A snapshot drains what it reads: counters show what moved since the last read.
    let read = || {
        let mut state = None;
        let mut trips = None;
        let mut overall_state = None;
        let mut overall_trips = None;
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let labels: Vec<_> = key.labels().map(|l| (l.key(), l.value())).collect();
            match (key.name(), value) {
                ("test_circuit_breaker_path_state", DebugValue::Gauge(v)) => {
                    assert_eq!(labels, [("path", "direct")]);
                    state = Some(v.0);
                }
                ("test_circuit_breaker_path_trips_total", DebugValue::Counter(n)) => {
                    assert_eq!(labels, [("path", "direct")]);
                    trips = Some(n);
                }
                ("test_circuit_breaker_state", DebugValue::Gauge(v)) => {
                    assert!(labels.is_empty());
                    overall_state = Some(v.0);
                }
                ("test_circuit_breaker_trips_total", DebugValue::Counter(n)) => {
                    assert!(labels.is_empty());
                    overall_trips = Some(n);
                }
                (name, _) => panic!("unexpected metric {name}"),
            }
        }
        // One breaker alone: the unlabelled pair says the same as its own.
        assert_eq!((overall_state, overall_trips), (state, trips));
        (state.unwrap(), trips.unwrap())
    };
    assert_eq!(read(), (0.0, 0));
    for _ in 0..CONFIG.failure_threshold {
        publish(&mut service, &mut handle, Err(Error::unavailable("down")))
            .await
            .unwrap_err();
    }
    assert_eq!(read(), (1.0, 1));
    tokio::time::advance(CONFIG.open_timeout).await;
    publish(&mut service, &mut handle, Ok(())).await.unwrap();
    assert_eq!(read(), (2.0, 0));
    publish(&mut service, &mut handle, Err(Error::unavailable("down")))
        .await
        .unwrap_err();
    assert_eq!(read(), (1.0, 1));
    assert_eq!(layer.handle().state(), BreakerState::Open);
}

#[test]
fn invalid_config_is_a_config_error() {
    for config in [
        BreakerConfig {
            failure_threshold: 0,
            ..BreakerConfig::default()
        },
        BreakerConfig {
            half_open_trials: 0,
            ..BreakerConfig::default()
        },
    ] {
        let err = CircuitBreakerLayer::new("x", config).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }
    assert_eq!(
        BreakerConfig::default(),
        BreakerConfig {
            failure_threshold: 10,
            open_timeout: Duration::from_secs(30),
            half_open_trials: 3,
            transient_grace: Duration::from_secs(15),
        }
    );
}
