use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::future::BoxFuture;

use crate::{
    error::Error,
    message::{PublishRequest, Receipt, Route},
    publisher::Publisher,
    validate::{Limits, validate_request},
};

/// What the [`ScriptedPublisher`] does with one publish.
#[derive(Debug)]
pub enum Outcome {
    /// Succeed at once.
    Succeed,
    /// Fail with this error.
    Fail(Error),
    /// Wait this long (tokio time, so paused clocks work), then succeed.
    Delay(Duration),
    /// Wait this long, then fail.
    DelayThenFail(Duration, Error),
    /// Never answer (until dropped).
    Hang,
}

#[derive(Debug, Default)]
struct State {
    script: Mutex<VecDeque<Outcome>>,
    received: Mutex<Vec<PublishRequest>>,
    calls: AtomicUsize,
    flushes: AtomicUsize,
    closed: AtomicBool,
}

/// An in-memory publisher that follows a script: each publish takes the next [`Outcome`]
/// (succeeding once the script runs out), records the request and counts calls.
///
/// It validates requests like a real transport, so invalid input never "arrives". Clones share
/// the script and the record.
///
/// ```
/// use lax_core::{Error, Publisher, PublishRequest, Route};
/// use lax_core::testing::{Outcome, ScriptedPublisher};
///
/// # tokio_test::block_on(async {
/// let publisher = ScriptedPublisher::new(Route::Direct);
/// publisher.push(Outcome::Fail(Error::unavailable("down")));
/// assert!(publisher.publish(PublishRequest::new("a.b", "x")).await.is_err());
/// assert!(publisher.publish(PublishRequest::new("a.b", "y")).await.is_ok());
/// assert_eq!(publisher.calls(), 2);
/// assert_eq!(publisher.received().len(), 2);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct ScriptedPublisher {
    route: Route,
    limits: Limits,
    state: Arc<State>,
}

impl ScriptedPublisher {
    /// A publisher whose receipts report `route`.
    pub fn new(route: Route) -> Self {
        ScriptedPublisher {
            route,
            limits: Limits::default(),
            state: Arc::default(),
        }
    }

    /// Appends one outcome to the script.
    pub fn push(&self, outcome: Outcome) {
        self.state.script.lock().unwrap().push_back(outcome);
    }

    /// Appends `n` copies of an outcome made by `make`.
    pub fn push_n(&self, n: usize, mut make: impl FnMut() -> Outcome) {
        let mut script = self.state.script.lock().unwrap();
        script.extend((0..n).map(|_| make()));
    }

    /// Number of publish calls, including failed ones.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Number of flush calls.
    pub fn flushes(&self) -> usize {
        self.state.flushes.load(Ordering::SeqCst)
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.state.closed.load(Ordering::SeqCst)
    }

    /// Every request that got past validation, in call order.
    pub fn received(&self) -> Vec<PublishRequest> {
        self.state.received.lock().unwrap().clone()
    }
}

impl Publisher for ScriptedPublisher {
    type Future = BoxFuture<'static, Result<Receipt, Error>>;

    fn publish(&self, request: PublishRequest) -> Self::Future {
        self.state.calls.fetch_add(1, Ordering::SeqCst);
        if self.state.closed.load(Ordering::SeqCst) {
            return Box::pin(async { Err(Error::closed()) });
        }
        if let Err(e) = validate_request(&request, &self.limits) {
            return Box::pin(async { Err(e) });
        }
        let outcome = self
            .state
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Outcome::Succeed);
        self.state.received.lock().unwrap().push(request.clone());
        let route = self.route;
        let receipt = move || Receipt {
            message_id: request.message_id,
            route,
            ack: None,
        };
        Box::pin(async move {
            match outcome {
                Outcome::Succeed => Ok(receipt()),
                Outcome::Fail(e) => Err(e),
                Outcome::Delay(d) => {
                    tokio::time::sleep(d).await;
                    Ok(receipt())
                }
                Outcome::DelayThenFail(d, e) => {
                    tokio::time::sleep(d).await;
                    Err(e)
                }
                Outcome::Hang => futures::future::pending().await,
            }
        })
    }

    async fn flush(&self) -> Result<(), Error> {
        self.state.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn close(&self) -> Result<(), Error> {
        self.state.closed.store(true, Ordering::SeqCst);
        Ok(())
    }
}
