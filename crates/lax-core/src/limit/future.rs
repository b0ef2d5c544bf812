//! The response future of [`ConcurrencyLimit`](super::ConcurrencyLimit).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use super::{Slot, error::Overloaded};
use crate::error::{BoxError, Error};
use pin_project_lite::pin_project;

pin_project! {
    /// The inner answer, holding an in-flight slot until it completes; or a refusal.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Called {
            #[pin]
            future: F,
            // Released when the answer arrives or the future is dropped.
            slot: Option<Slot>,
        },
        Refused { max: usize },
        NotReady,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn called(future: F, slot: Slot) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                slot: Some(slot),
            },
        }
    }

    pub(super) fn refused(max: usize) -> Self {
        ResponseFuture {
            kind: Kind::Refused { max },
        }
    }

    pub(super) fn not_ready() -> Self {
        ResponseFuture {
            kind: Kind::NotReady,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future, slot } => {
                let result = std::task::ready!(future.poll(cx));
                slot.take();
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Refused { max } => Poll::Ready(Err(Overloaded::new(*max).into())),
            KindProj::NotReady => {
                Poll::Ready(Err(Error::called_before_ready("ConcurrencyLimit").into()))
            }
        }
    }
}
