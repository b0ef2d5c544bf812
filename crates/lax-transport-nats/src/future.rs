//! The future of one [`NatsPublisher::publish`](crate::NatsPublisher).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use lax_core::{Error, Receipt, drain::DrainToken};

/// The outcome of one publish: ready at once when the message was refused or buffered while
/// disconnected, otherwise once the client has taken the message.
///
/// While pending it counts as in flight, so [`close`](lax_core::Publisher::close) waits for it.
#[must_use = "a publish that is not awaited may never be handed to the connection"]
pub struct PublishFuture {
    state: State,
}

enum State {
    Ready(Result<Receipt, Error>),
    Sending {
        send: BoxFuture<'static, Result<Receipt, Error>>,
        _in_flight: DrainToken,
    },
    Done,
}

impl PublishFuture {
    pub(crate) fn ready(result: Result<Receipt, Error>) -> Self {
        PublishFuture {
            state: State::Ready(result),
        }
    }

    pub(crate) fn sending(
        send: BoxFuture<'static, Result<Receipt, Error>>,
        in_flight: DrainToken,
    ) -> Self {
        PublishFuture {
            state: State::Sending {
                send,
                _in_flight: in_flight,
            },
        }
    }
}

impl Future for PublishFuture {
    type Output = Result<Receipt, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Taking the state out leaves `Done` behind, which also ends the in-flight count as
        // soon as the outcome is known.
        let result = match std::mem::replace(&mut self.state, State::Done) {
            State::Ready(result) => result,
            State::Sending {
                mut send,
                _in_flight,
            } => match send.as_mut().poll(cx) {
                Poll::Ready(result) => result,
                Poll::Pending => {
                    self.state = State::Sending { send, _in_flight };
                    return Poll::Pending;
                }
            },
            State::Done => Err(Error::internal("PublishFuture polled after it completed")),
        };
        Poll::Ready(result)
    }
}

impl fmt::Debug for PublishFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Ready(Ok(_)) => "ready(ok)",
            State::Ready(Err(_)) => "ready(err)",
            State::Sending { .. } => "sending",
            State::Done => "done",
        };
        f.debug_struct("PublishFuture")
            .field("state", &state)
            .finish()
    }
}
