use std::task::Poll;

use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::ServiceExt;
use tower_test::mock;

use super::{DefaultRoute, Route};
use crate::{
    error::ErrorKind,
    message::{self, PublishRequest, Receipt, Tier},
};

type Mock = mock::Mock<PublishRequest, Receipt>;
type Handle = mock::Handle<PublishRequest, Receipt>;

fn paths() -> (Mock, Handle, Mock, Handle) {
    let (direct, direct_handle) = mock::pair();
    let (broker, broker_handle) = mock::pair();
    (direct, direct_handle, broker, broker_handle)
}

/// Answers the next request on `handle` with a receipt, returning the request.
async fn answer(handle: &mut Handle) -> PublishRequest {
    let (request, respond) = handle.next_request().await.unwrap();
    respond.send_response(Receipt::direct(request.message_id.clone()));
    request
}

/// Nothing more arrived on `handle` (its service may be gone, once the route was consumed).
fn assert_no_request(handle: &mut Handle) {
    match handle.poll_request() {
        Poll::Pending | Poll::Ready(None) => {}
        Poll::Ready(Some((request, _))) => panic!("unexpected request {request:?}"),
    }
}

#[tokio::test]
async fn the_lax_table_decides_by_default() {
    let (direct, mut direct_handle, broker, mut broker_handle) = paths();
    let route = Route::new(direct, broker);

    let memory = PublishRequest::new("a", "1");
    let acked = PublishRequest::new("a", "2").with_ack(true);
    let replicated = PublishRequest::new("a", "3").with_tier(Tier::Replicated);
    let calls = [memory.clone(), acked.clone(), replicated.clone()]
        .map(|request| tokio::spawn(route.clone().oneshot(request)));

    assert_eq!(
        answer(&mut direct_handle).await.message_id,
        memory.message_id
    );
    let mut brokered = [
        answer(&mut broker_handle).await.message_id,
        answer(&mut broker_handle).await.message_id,
    ];
    brokered.sort();
    let mut expected = [acked.message_id, replicated.message_id];
    expected.sort();
    assert_eq!(brokered, expected);
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_no_request(&mut direct_handle);
    assert_no_request(&mut broker_handle);
}

#[tokio::test]
async fn a_closure_is_a_policy() {
    let (direct, mut direct_handle, broker, mut broker_handle) = paths();
    let everything_to_the_broker = |_: &PublishRequest| message::Route::Broker;
    let route = Route::with_policy(direct, broker, everything_to_the_broker);
    let call = tokio::spawn(route.oneshot(PublishRequest::new("a", "1")));
    answer(&mut broker_handle).await;
    call.await.unwrap().unwrap();
    assert_no_request(&mut direct_handle);
}

#[tokio::test]
async fn a_broker_that_is_never_ready_does_not_stall_direct_publishes() {
    let (direct, mut direct_handle, broker, mut broker_handle) = paths();
    broker_handle.allow(0);
    let mut route = mock::Spawn::new(Route::new(direct, broker));

    assert_ready_ok!(route.poll_ready());
    let mut stuck = task::spawn(route.call(PublishRequest::new("a", "b").with_ack(true)));
    assert_pending!(stuck.poll());

    for i in 0..3 {
        // Route stays ready, and direct publishes complete while the broker one waits.
        assert_ready_ok!(route.poll_ready());
        let direct = route.call(PublishRequest::new("a", format!("{i}")));
        let (receipt, _) = tokio::join!(direct, answer(&mut direct_handle));
        receipt.unwrap();
        assert_pending!(stuck.poll());
    }

    // The broker recovers: the waiting publish goes through.
    broker_handle.allow(1);
    assert!(stuck.is_woken());
    assert_pending!(stuck.poll());
    answer(&mut broker_handle).await;
    stuck.await.unwrap();
}

#[tokio::test]
async fn a_broker_that_hangs_does_not_stall_direct_publishes() {
    let (direct, mut direct_handle, broker, mut broker_handle) = paths();
    let route = Route::new(direct, broker);
    let hung = tokio::spawn(
        route
            .clone()
            .oneshot(PublishRequest::new("a", "b").with_tier(Tier::Persistent)),
    );
    let (_request, _never_answered) = broker_handle.next_request().await.unwrap();
    let direct = tokio::spawn(route.oneshot(PublishRequest::new("a", "c")));
    answer(&mut direct_handle).await;
    direct.await.unwrap().unwrap();
    assert!(!hung.is_finished());
    hung.abort();
}

#[tokio::test]
async fn buffered_paths_are_isolated_too() {
    let (direct, mut direct_handle, broker, mut broker_handle) = paths();
    broker_handle.allow(0);
    let route = Route::buffered(direct, broker, DefaultRoute, 8).unwrap();
    let stuck = tokio::spawn(
        route
            .clone()
            .oneshot(PublishRequest::new("a", "b").with_ack(true)),
    );
    for i in 0..3 {
        let direct = tokio::spawn(
            route
                .clone()
                .oneshot(PublishRequest::new("a", format!("{i}"))),
        );
        answer(&mut direct_handle).await;
        direct.await.unwrap().unwrap();
    }
    assert!(!stuck.is_finished());
    broker_handle.allow(1);
    answer(&mut broker_handle).await;
    stuck.await.unwrap().unwrap();
}

#[test]
fn a_buffered_route_needs_a_runtime_and_room() {
    let (direct, _dh, broker, _bh) = paths();
    let err = Route::buffered::<PublishRequest>(direct, broker, DefaultRoute, 8).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let (direct, _dh, broker, _bh) = paths();
    let err = Route::buffered::<PublishRequest>(direct, broker, DefaultRoute, 0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[tokio::test]
async fn a_direct_path_that_is_not_ready_waits_in_its_own_future() {
    let (direct, mut direct_handle, broker, mut broker_handle) = paths();
    direct_handle.allow(0);
    let mut route = mock::Spawn::new(Route::new(direct, broker));

    assert_ready_ok!(route.poll_ready());
    let mut waiting = task::spawn(route.call(PublishRequest::new("a", "direct")));
    assert_pending!(waiting.poll());

    // The broker path and the route are unaffected.
    assert_ready_ok!(route.poll_ready());
    let acked = route.call(PublishRequest::new("a", "acked").with_ack(true));
    let (receipt, _) = tokio::join!(acked, answer(&mut broker_handle));
    receipt.unwrap();

    direct_handle.allow(1);
    assert!(waiting.is_woken());
    assert_pending!(waiting.poll());
    assert_eq!(answer(&mut direct_handle).await.payload, "direct");
    waiting.await.unwrap();
}

#[tokio::test]
async fn a_direct_path_whose_readiness_fails_fails_the_request() {
    let (direct, mut direct_handle, broker, _broker_handle) = paths();
    direct_handle.send_error(crate::error::Error::unavailable("nats gone"));
    let route = Route::new(direct, broker);
    let err = route
        .oneshot(PublishRequest::new("a", "b"))
        .await
        .unwrap_err();
    assert_eq!(
        crate::error::Error::from_boxed(err).kind(),
        ErrorKind::Unavailable
    );
}
