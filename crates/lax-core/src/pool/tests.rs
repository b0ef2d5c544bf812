use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::Poll,
};

use tokio::sync::mpsc;
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok};
use tower::{Service, ServiceExt};
use tower_test::mock;

use super::Pool;
use crate::{
    error::{BoxError, Error, ErrorKind},
    message::{PublishRequest, Receipt},
};

type Handle = mock::Handle<PublishRequest, Receipt>;
type Member = mock::Mock<PublishRequest, Receipt>;

/// A maker of mock members: each one made sends its handle down the channel.
#[allow(clippy::type_complexity)]
fn maker() -> (
    impl Service<
        (),
        Response = Member,
        Error = BoxError,
        Future = futures::future::Ready<Result<Member, BoxError>>,
    >,
    mpsc::UnboundedReceiver<Handle>,
    Arc<AtomicUsize>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let made = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&made);
    let maker = tower::service_fn(move |()| {
        counter.fetch_add(1, Ordering::SeqCst);
        let (member, handle) = mock::pair();
        let _ = tx.send(handle);
        futures::future::ready(Ok::<_, BoxError>(member))
    });
    (maker, rx, made)
}

async fn answer(handle: &mut Handle) {
    let (request, respond) = handle.next_request().await.unwrap();
    respond.send_response(Receipt::direct(request.message_id));
}

#[tokio::test]
async fn requests_are_spread_over_the_members_in_turn() {
    let (maker, mut handles, made) = maker();
    let mut pool = mock::Spawn::new(Pool::new(maker, (), 3).unwrap());
    let mut responses = Vec::new();
    for i in 0..6 {
        assert_ready_ok!(pool.poll_ready());
        responses.push(pool.call(PublishRequest::new("a", format!("{i}"))));
    }
    assert_eq!(made.load(Ordering::SeqCst), 3);
    for _ in 0..3 {
        let mut handle = handles.recv().await.unwrap();
        // Each member got exactly two of the six.
        answer(&mut handle).await;
        answer(&mut handle).await;
        assert_pending!(handle.poll_request());
    }
    for response in responses {
        response.await.unwrap();
    }
    assert_eq!(pool.get_ref().live(), 3);
}

#[tokio::test]
async fn a_member_whose_connection_fails_is_replaced() {
    let (maker, mut handles, made) = maker();
    let mut pool = mock::Spawn::new(Pool::new(maker, (), 2).unwrap());
    assert_ready_ok!(pool.poll_ready());
    let failing = pool.call(PublishRequest::new("a", "1"));
    let mut first = handles.recv().await.unwrap();
    let (_, respond) = first.next_request().await.unwrap();
    respond.send_error(Error::unavailable("connection reset"));
    failing.await.unwrap_err();

    // A refusal is not a broken connection: that member stays.
    assert_ready_ok!(pool.poll_ready());
    let refused = pool.call(PublishRequest::new("a", "2"));
    let mut second = handles.recv().await.unwrap();
    let (_, respond) = second.next_request().await.unwrap();
    respond.send_error(Error::rejected("no stream"));
    refused.await.unwrap_err();

    // Member 0's turn again: it is broken, so a new one is made in its place.
    assert_ready_ok!(pool.poll_ready());
    assert_eq!(made.load(Ordering::SeqCst), 3);
    let served = pool.call(PublishRequest::new("a", "3"));
    let mut replacement = handles.recv().await.unwrap();
    answer(&mut replacement).await;
    served.await.unwrap();
    // The broken member was dropped, not called again.
    assert!(matches!(first.poll_request(), Poll::Ready(None)));
    assert_eq!(pool.get_ref().live(), 2);
}

#[tokio::test]
async fn a_member_whose_poll_ready_fails_is_replaced() {
    let (maker, mut handles, made) = maker();
    let mut pool = mock::Spawn::new(Pool::new(maker, (), 1).unwrap());
    assert_ready_ok!(pool.poll_ready());
    let response = pool.call(PublishRequest::new("a", "1"));
    let mut first = handles.recv().await.unwrap();
    answer(&mut first).await;
    response.await.unwrap();

    first.send_error(Error::unavailable("gone"));
    assert_ready_ok!(pool.poll_ready());
    assert_eq!(made.load(Ordering::SeqCst), 2);
    let response = pool.call(PublishRequest::new("a", "2"));
    answer(&mut handles.recv().await.unwrap()).await;
    response.await.unwrap();
}

#[tokio::test]
async fn the_pool_is_not_ready_while_no_member_is() {
    let (maker, mut handles, _made) = maker();
    let mut pool = mock::Spawn::new(Pool::new(maker, (), 2).unwrap());
    // Members are made as the rotation reaches them: two calls make both.
    let mut members = Vec::new();
    for i in 0..2 {
        assert_ready_ok!(pool.poll_ready());
        let response = pool.call(PublishRequest::new("a", format!("{i}")));
        let mut handle = handles.recv().await.unwrap();
        answer(&mut handle).await;
        response.await.unwrap();
        members.push(handle);
    }
    assert!(handles.try_recv().is_err(), "no third member");
    for handle in &mut members {
        handle.allow(0);
    }
    assert_pending!(pool.poll_ready());
    assert_pending!(pool.poll_ready());

    members[1].allow(1);
    assert!(pool.is_woken());
    assert_ready_ok!(pool.poll_ready());
    let response = pool.call(PublishRequest::new("a", "2"));
    answer(&mut members[1]).await;
    response.await.unwrap();
}

#[tokio::test]
async fn poll_ready_fails_only_when_no_member_can_be_made() {
    let made = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&made);
    let refusing = tower::service_fn(move |()| {
        counter.fetch_add(1, Ordering::SeqCst);
        futures::future::ready(Err::<Member, BoxError>(
            Error::unavailable("connection refused").into(),
        ))
    });
    let mut pool = mock::Spawn::new(Pool::new(refusing, (), 3).unwrap());
    let err = assert_ready_err!(pool.poll_ready());
    assert_eq!(Error::from_boxed(err).kind(), ErrorKind::Unavailable);
    assert_eq!(made.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_pool_works_through_service_ext() {
    let (maker, mut handles, _made) = maker();
    let pool = Pool::new(maker, (), 2).unwrap();
    let publish = tokio::spawn(pool.oneshot(PublishRequest::new("a", "1")));
    answer(&mut handles.recv().await.unwrap()).await;
    publish.await.unwrap().unwrap();
}

#[test]
fn an_empty_pool_is_a_config_error() {
    let (maker, _handles, _made) = maker();
    assert_eq!(
        Pool::new(maker, (), 0).unwrap_err().kind(),
        ErrorKind::Config
    );
}
