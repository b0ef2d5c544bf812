use std::{sync::Arc, time::Duration};

use metrics_util::debugging::DebuggingRecorder;
use tokio_test::assert_ready_ok;
use tower::Layer;
use tower_test::mock;

use super::{MetricsLayer, recorded::Recorded};
use crate::{
    error::Error,
    message::{PublishRequest, Receipt, Route, Tier},
};

type Spawned = mock::Spawn<super::Metrics<mock::Mock<PublishRequest, Receipt>>>;

fn service(
    recorder: &DebuggingRecorder,
) -> (
    Spawned,
    mock::Handle<PublishRequest, Receipt>,
    Arc<quanta::Mock>,
) {
    let (clock, time) = quanta::Clock::mock();
    let layer = metrics::with_local_recorder(recorder, || MetricsLayer::with_clock("test", clock));
    let (inner, handle) = mock::pair();
    (mock::Spawn::new(layer.layer(inner)), handle, time)
}

#[tokio::test]
async fn a_direct_success_is_counted_once_with_its_latency() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (mut service, mut handle, time) = service(&recorder);

    assert_ready_ok!(service.poll_ready());
    let response = service.call(PublishRequest::new("a.b", "x"));
    let (request, respond) = handle.next_request().await.unwrap();
    time.increment(Duration::from_millis(250));
    respond.send_response(Receipt::direct(request.message_id));
    response.await.unwrap();

    let recorded = Recorded::take(&snapshotter);
    let memory_success = [("tier", "memory"), ("status", "success")];
    assert_eq!(recorded.counter("test_publish_total", &memory_success), 1);
    assert_eq!(
        recorded.samples(
            "test_publish_latency_seconds",
            &[("tier", "memory"), ("method", "nats")]
        ),
        vec![0.25]
    );
    assert_eq!(recorded.counter("test_direct_nats_total", &[]), 1);
    assert_eq!(recorded.counter("test_grpc_total", &[]), 0);
    // Nothing else moved: one count, one sample, one route count.
    assert_eq!(recorded.total(), 3);
}

#[tokio::test]
async fn a_failure_counts_its_error_type_under_the_default_route() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (mut service, mut handle, _time) = service(&recorder);

    assert_ready_ok!(service.poll_ready());
    let response = service.call(PublishRequest::new("a.b", "x").with_tier(Tier::Persistent));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_error(Error::unavailable("broker down"));
    response.await.unwrap_err();

    let recorded = Recorded::take(&snapshotter);
    let labels = [("tier", "persistent"), ("status", "error")];
    assert_eq!(recorded.counter("test_publish_total", &labels), 1);
    let labels = [("tier", "persistent"), ("error_type", "ConnectionError")];
    assert_eq!(recorded.counter("test_publish_errors_total", &labels), 1);
    let labels = [("tier", "persistent"), ("kind", "unavailable")];
    assert_eq!(
        recorded.counter("test_publish_errors_by_kind_total", &labels),
        1
    );
    let labels = [("tier", "persistent"), ("method", "unknown")];
    assert_eq!(
        recorded
            .samples("test_publish_latency_seconds", &labels)
            .len(),
        1
    );
    assert_eq!(recorded.counter("test_grpc_total", &[]), 1);
    assert_eq!(recorded.counter("test_direct_nats_total", &[]), 0);
    assert_eq!(recorded.total(), 5);
}

#[tokio::test]
async fn a_publish_the_breaker_refused_is_method_none_and_circuit_open() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (mut service, mut handle, _time) = service(&recorder);

    assert_ready_ok!(service.poll_ready());
    let response = service.call(PublishRequest::new("a.b", "x").with_tier(Tier::Replicated));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_error(crate::breaker::error::CircuitOpen::new("broker"));
    response.await.unwrap_err();

    let recorded = Recorded::take(&snapshotter);
    let labels = [("tier", "replicated"), ("error_type", "circuit_open")];
    assert_eq!(recorded.counter("test_publish_errors_total", &labels), 1);
    let labels = [("tier", "replicated"), ("method", "none")];
    assert_eq!(
        recorded
            .samples("test_publish_latency_seconds", &labels)
            .len(),
        1
    );
}

#[test]
fn error_types_are_the_python_sdk_class_names() {
    use super::{error_type, method};
    use crate::error::ErrorKind;
    assert_eq!(error_type(ErrorKind::TimedOut), "TimeoutError");
    assert_eq!(error_type(ErrorKind::Unavailable), "ConnectionError");
    assert_eq!(error_type(ErrorKind::Closed), "ConnectionError");
    assert_eq!(error_type(ErrorKind::Rejected), "PublishError");
    assert_eq!(error_type(ErrorKind::Overloaded), "PublishError");
    assert_eq!(error_type(ErrorKind::InvalidInput), "ValueError");
    assert_eq!(error_type(ErrorKind::CircuitOpen), "circuit_open");
    assert_eq!(method(Ok(Route::Direct)), "nats");
    assert_eq!(method(Ok(Route::Broker)), "grpc");
    assert_eq!(method(Err(ErrorKind::CircuitOpen)), "none");
    assert_eq!(method(Err(ErrorKind::TimedOut)), "unknown");
}

#[tokio::test]
async fn the_route_comes_from_the_receipt_on_success() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (mut service, mut handle, _time) = service(&recorder);

    // Memory without ack defaults to direct, but a custom policy sent it to the broker.
    assert_ready_ok!(service.poll_ready());
    let response = service.call(PublishRequest::new("a.b", "x"));
    let (request, respond) = handle.next_request().await.unwrap();
    let mut receipt = Receipt::direct(request.message_id);
    receipt.route = Route::Broker;
    respond.send_response(receipt);
    response.await.unwrap();

    let recorded = Recorded::take(&snapshotter);
    assert_eq!(recorded.counter("test_grpc_total", &[]), 1);
    assert_eq!(recorded.counter("test_direct_nats_total", &[]), 0);
    let labels = [("tier", "memory"), ("method", "grpc")];
    assert_eq!(
        recorded
            .samples("test_publish_latency_seconds", &labels)
            .len(),
        1
    );
}

#[tokio::test]
async fn every_series_is_registered_up_front() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _service = service(&recorder);
    let recorded = Recorded::take(&snapshotter);
    // tier × (status + method + error type + error kind) + two route counters.
    assert_eq!(recorded.0.len(), 3 * (2 + 4 + 5 + 9) + 2);
    assert_eq!(recorded.total(), 0);
    for tier in Tier::ALL {
        let labels = [("tier", tier.as_str()), ("error_type", "circuit_open")];
        assert_eq!(recorded.counter("test_publish_errors_total", &labels), 0);
    }
}
