//! The transport's metrics, read from a global Prometheus recorder (this binary's only test,
//! so nothing else records into it).

mod common;

use std::time::Duration;

use common::fake::FakeServer;
use lax_core::Publisher;
use lax_testkit::wait_until;
use lax_transport_grpc::{GrpcOptions, GrpcPublisher};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The value of the sample `series` in the Prometheus rendering (0 when absent).
fn sample(handle: &PrometheusHandle, series: &str) -> f64 {
    handle
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn gauge(handle: &PrometheusHandle) -> f64 {
    sample(handle, "test_grpc_connections")
}

fn errors(handle: &PrometheusHandle) -> f64 {
    sample(handle, "test_connection_errors_total{type=\"grpc\"}")
}

#[tokio::test]
async fn connections_gauge_and_error_counter_follow_the_pool() {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this binary");

    let server = FakeServer::start().await;
    let publisher = GrpcPublisher::connect(
        GrpcOptions::new([server.url()])
            .connection_pool_size(3)
            .metrics_prefix("test")
            .reconnect_initial_backoff(Duration::from_millis(20)),
    )
    .await
    .unwrap();
    assert_eq!(gauge(&handle), 3.0);
    assert_eq!(errors(&handle), 0.0);

    server.broker.break_streams().await;
    wait_until(Duration::from_secs(10), || async {
        errors(&handle) == 3.0 && publisher.healthy_connections() == 3
    })
    .await
    .expect("three breaks counted, three connections rebuilt");
    assert_eq!(gauge(&handle), 3.0);

    publisher.close().await.unwrap();
    assert_eq!(gauge(&handle), 0.0, "a closed pool has no connections");
}
