use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Service, ServiceExt};
use tower_test::mock;

use super::{Stack, StackBuilder, StackConfig, StackLayers};
use crate::{
    breaker::{BreakerConfig, BreakerState, error::CircuitOpen},
    error::{Error, ErrorKind},
    limit::{LimitConfig, LimitMode, error::Overloaded},
    message::{PublishRequest, Receipt, Route, Tier},
    metrics::recorded::Recorded,
    publisher::{Publisher, PublisherService, ServicePublisher},
    retry::RetryConfig,
    testing::{Outcome, ScriptedPublisher},
    timeout::error::Elapsed,
};

fn publishers() -> (ScriptedPublisher, ScriptedPublisher) {
    (
        ScriptedPublisher::new(Route::Direct),
        ScriptedPublisher::new(Route::Broker),
    )
}

#[tokio::test(start_paused = true)]
async fn the_broker_path_retries_and_the_publish_is_counted_once() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (direct, broker) = publishers();
    broker.push_n(2, || Outcome::Fail(Error::unavailable("reset")));
    let stack = metrics::with_local_recorder(&recorder, || {
        StackBuilder::new(StackConfig::default())
            .metrics_prefix("t")
            .build(
                PublisherService::new(direct.clone()),
                PublisherService::new(broker.clone()),
            )
            .unwrap()
    });
    let publisher = ServicePublisher::new(stack);
    let request = PublishRequest::new("orders.created", "{}").with_tier(Tier::Persistent);
    let id = request.message_id.clone();
    assert_eq!(publisher.publish(request).await.unwrap().message_id, id);
    assert_eq!(broker.calls(), 3);
    assert!(broker.received().iter().all(|r| r.message_id == id));
    assert_eq!(direct.calls(), 0);

    let mut counted = 0;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if let DebugValue::Counter(n) = value
            && key.key().name() == "t_publish_total"
        {
            counted += n;
        }
    }
    assert_eq!(counted, 1);
}

#[tokio::test(start_paused = true)]
async fn direct_publishes_are_not_retried_and_each_path_has_its_breaker() {
    let (direct, broker) = publishers();
    let config = StackConfig {
        breaker: Some(BreakerConfig {
            failure_threshold: 2,
            ..BreakerConfig::default()
        }),
        retry: Some(RetryConfig::default()),
        ..StackConfig::default()
    };
    direct.push_n(2, || Outcome::Fail(Error::unavailable("no nats")));
    let layers = StackBuilder::new(config).layers().unwrap();
    let stack = layers.service(
        PublisherService::new(direct.clone()),
        PublisherService::new(broker.clone()),
    );
    let publisher = ServicePublisher::new(stack);
    for _ in 0..2 {
        let err = publisher
            .publish(PublishRequest::new("a.b", "x"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
    }
    assert_eq!(direct.calls(), 2);
    assert_eq!(layers.direct_breaker().unwrap().state(), BreakerState::Open);
    assert_eq!(
        layers.broker_breaker().unwrap().state(),
        BreakerState::Closed
    );
    let err = publisher
        .publish(PublishRequest::new("a.b", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CircuitOpen);
    // The broker path is unaffected.
    let acked = PublishRequest::new("a.b", "x").with_ack(true);
    assert_eq!(publisher.publish(acked).await.unwrap().route, Route::Broker);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_broker_does_not_stall_direct_publishes_through_the_stack() {
    let (direct, broker) = publishers();
    broker.push(Outcome::Hang);
    let stack = StackBuilder::default()
        .publish_timeout(Duration::from_secs(5))
        .build(
            PublisherService::new(direct.clone()),
            PublisherService::new(broker.clone()),
        )
        .unwrap();
    let publisher = ServicePublisher::new(stack);
    let hung = tokio::spawn({
        let publisher = publisher.clone();
        async move {
            let request = PublishRequest::new("a.b", "x").with_tier(Tier::Persistent);
            publisher.publish(request).await
        }
    });
    for _ in 0..5 {
        publisher
            .publish(PublishRequest::new("a.b", "y"))
            .await
            .unwrap();
    }
    assert_eq!(direct.calls(), 5);
    // The hung attempt times out after 5 s, and the retry succeeds.
    hung.await.unwrap().unwrap();
    assert_eq!(broker.calls(), 2);
}

#[test]
fn invalid_configs_are_refused_and_defaults_match_the_contract() {
    let (direct, broker) = publishers();
    let err = StackBuilder::default()
        .metrics_prefix("")
        .build(PublisherService::new(direct), PublisherService::new(broker))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let config = StackConfig::default();
    assert_eq!(config.publish_timeout, Duration::from_secs(5));
    assert_eq!(config.metrics_prefix, "lax_client");
    assert_eq!(config.limit.unwrap().max_in_flight, 1000);
    assert_eq!(config.retry.unwrap().max_attempts, 3);
    assert_eq!(config.breaker.unwrap().failure_threshold, 10);
}

/// A stack over scripted publishers, with `config`, recording into its own recorder.
struct Scripted {
    stack: Stack<PublisherService<ScriptedPublisher>, PublisherService<ScriptedPublisher>>,
    layers: StackLayers,
    direct: ScriptedPublisher,
    broker: ScriptedPublisher,
    snapshotter: Snapshotter,
}

fn scripted_stack(config: StackConfig) -> Scripted {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (direct, broker) = publishers();
    let layers = metrics::with_local_recorder(&recorder, || {
        StackBuilder::new(config)
            .metrics_prefix("t")
            .layers()
            .unwrap()
    });
    let stack = layers.service(
        PublisherService::new(direct.clone()),
        PublisherService::new(broker.clone()),
    );
    Scripted {
        stack,
        layers,
        direct,
        broker,
        snapshotter,
    }
}

fn capped(max_in_flight: usize, mode: LimitMode) -> StackConfig {
    StackConfig {
        limit: Some(LimitConfig {
            max_in_flight,
            mode,
        }),
        ..StackConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn at_the_cap_the_stack_waits_until_a_publish_ends() {
    let Scripted {
        stack,
        layers,
        direct,
        ..
    } = scripted_stack(capped(1, LimitMode::Wait));
    direct.push(Outcome::Delay(Duration::from_secs(1)));
    let mut first = mock::Spawn::new(stack.clone());
    let mut second = mock::Spawn::new(stack.clone());

    assert_ready_ok!(first.poll_ready());
    let slow = tokio::spawn(first.call(PublishRequest::new("a.b", "1")));
    assert_eq!(layers.available(), Some(0));
    assert_pending!(second.poll_ready());

    slow.await.unwrap().unwrap();
    assert_eq!(layers.available(), Some(1));
    assert!(second.is_woken());
    assert_ready_ok!(second.poll_ready());
    second.call(PublishRequest::new("a.b", "2")).await.unwrap();
    assert_eq!(direct.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_refuses_at_the_cap_and_the_refusal_is_counted() {
    let Scripted {
        stack,
        layers,
        direct,
        broker,
        snapshotter,
    } = scripted_stack(capped(1, LimitMode::FailFast));
    broker.push(Outcome::Hang);
    let hung = tokio::spawn(
        stack
            .clone()
            .oneshot(PublishRequest::new("a.b", "1").with_tier(Tier::Persistent)),
    );
    tokio::task::yield_now().await;
    assert_eq!(layers.available(), Some(0));

    let err = stack
        .clone()
        .oneshot(PublishRequest::new("a.b", "2"))
        .await
        .unwrap_err();
    assert_eq!(err.downcast_ref::<Overloaded>().unwrap().max(), 1);
    assert_eq!(direct.calls(), 0);
    let recorded = Recorded::take(&snapshotter);
    let overloaded = [("tier", "memory"), ("kind", "overloaded")];
    assert_eq!(
        recorded.counter("t_publish_errors_by_kind_total", &overloaded),
        1
    );
    // Refused, it counts under the route the LAX table gives it; the hung one is not done.
    assert_eq!(recorded.counter("t_direct_nats_total", &[]), 1);
    assert_eq!(recorded.counter("t_grpc_total", &[]), 0);

    // A publish dropped before its answer gives its slot back.
    hung.abort();
    assert!(hung.await.unwrap_err().is_cancelled());
    assert_eq!(layers.available(), Some(1));
    stack
        .clone()
        .oneshot(PublishRequest::new("a.b", "3"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_slot_taken_by_poll_ready_goes_back_when_the_stack_is_dropped() {
    let Scripted { stack, layers, .. } = scripted_stack(capped(1, LimitMode::Wait));
    let mut ready = mock::Spawn::new(stack.clone());
    assert_ready_ok!(ready.poll_ready());
    assert_eq!(layers.available(), Some(0));
    drop(ready);
    assert_eq!(layers.available(), Some(1));
}

#[tokio::test]
async fn a_call_without_poll_ready_is_an_error_not_a_panic() {
    let Scripted {
        mut stack,
        layers,
        direct,
        ..
    } = scripted_stack(capped(1, LimitMode::Wait));
    let err = stack
        .call(PublishRequest::new("a.b", "1"))
        .await
        .unwrap_err();
    assert_eq!(Error::from_boxed(err).kind(), ErrorKind::Internal);
    assert_eq!(direct.calls(), 0);
    assert_eq!(layers.available(), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_direct_publish_times_out_by_its_own_timeout_and_trips_the_breaker() {
    let config = StackConfig {
        breaker: Some(BreakerConfig {
            failure_threshold: 1,
            ..BreakerConfig::default()
        }),
        ..StackConfig::default()
    };
    let Scripted {
        stack,
        layers,
        direct,
        snapshotter,
        ..
    } = scripted_stack(config);
    direct.push(Outcome::Hang);
    let started = tokio::time::Instant::now();
    let request = PublishRequest::new("a.b", "1").with_timeout(Duration::from_millis(100));
    let err = stack.clone().oneshot(request).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<Elapsed>().unwrap().after(),
        Duration::from_millis(100)
    );
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    let breaker = layers.direct_breaker().unwrap();
    assert_eq!(breaker.state(), BreakerState::Open);

    let err = stack
        .clone()
        .oneshot(PublishRequest::new("a.b", "2"))
        .await
        .unwrap_err();
    assert_eq!(err.downcast_ref::<CircuitOpen>().unwrap().name(), "direct");
    assert_eq!(direct.calls(), 1);
    let recorded = Recorded::take(&snapshotter);
    for kind in [ErrorKind::TimedOut, ErrorKind::CircuitOpen] {
        let labels = [("tier", "memory"), ("kind", kind.as_str())];
        assert_eq!(
            recorded.counter("t_publish_errors_by_kind_total", &labels),
            1
        );
    }
    let failed = [("tier", "memory"), ("status", "error")];
    assert_eq!(recorded.counter("t_publish_total", &failed), 2);
    // Failed publishes count under the route the LAX table gives them.
    assert_eq!(recorded.counter("t_direct_nats_total", &[]), 2);
    // The timeout as `unknown`, the refusal as `none`, as the Python SDK labelled them.
    for method in ["unknown", "none"] {
        let latency = [("tier", "memory"), ("method", method)];
        assert_eq!(
            recorded
                .samples("t_publish_latency_seconds", &latency)
                .len(),
            1
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_trial_publish_dropped_unfinished_goes_back_to_the_breaker() {
    let config = StackConfig {
        breaker: Some(BreakerConfig {
            failure_threshold: 1,
            open_timeout: Duration::from_secs(1),
            half_open_trials: 1,
            ..BreakerConfig::default()
        }),
        ..StackConfig::default()
    };
    let Scripted {
        stack,
        layers,
        direct,
        ..
    } = scripted_stack(config);
    direct.push(Outcome::Fail(Error::unavailable("no nats")));
    direct.push(Outcome::Hang);
    let request = || PublishRequest::new("a.b", "x");
    stack.clone().oneshot(request()).await.unwrap_err();
    let breaker = layers.direct_breaker().unwrap();
    assert_eq!(breaker.state(), BreakerState::Open);

    tokio::time::advance(Duration::from_secs(1)).await;
    let mut trial = tokio_test::task::spawn(stack.clone().oneshot(request()));
    assert_pending!(trial.poll());
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    drop(trial);

    // The trial's place is free again: the next publish is admitted, and closes the circuit.
    stack.clone().oneshot(request()).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(direct.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_direct_transport_that_is_not_ready_waits_under_the_timeout_without_holding_back_the_broker()
 {
    let (direct, mut handle) = mock::pair::<PublishRequest, Receipt>();
    let broker = ScriptedPublisher::new(Route::Broker);
    let stack = StackBuilder::new(StackConfig::default())
        .publish_timeout(Duration::from_secs(2))
        .build(direct, PublisherService::new(broker.clone()))
        .unwrap();
    handle.allow(0);
    let waiting = tokio::spawn(stack.clone().oneshot(PublishRequest::new("a.b", "1")));
    let acked = PublishRequest::new("a.b", "2").with_ack(true);
    assert_eq!(
        stack.clone().oneshot(acked).await.unwrap().route,
        Route::Broker
    );

    let err = waiting.await.unwrap().unwrap_err();
    assert_eq!(
        err.downcast_ref::<Elapsed>().unwrap().after(),
        Duration::from_secs(2)
    );
    assert_pending!(handle.poll_request());
    assert_eq!(broker.calls(), 1);
}
