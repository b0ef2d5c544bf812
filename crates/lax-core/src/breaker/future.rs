//! The response future of [`CircuitBreaker`](super::CircuitBreaker).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;

use super::{
    error::CircuitOpen,
    state::{Admission, Shared, Verdict},
};
use crate::error::{BoxError, Error};

pin_project! {
    /// The inner answer, recorded by the breaker; or a fast failure while open.
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
            shared: Arc<Shared>,
            // Taken when the answer is recorded; a trial dropped unrecorded goes back.
            admission: Option<Admission>,
        },
        Rejected { name: &'static str },
        NotReady,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn called(future: F, shared: Arc<Shared>, admission: Admission) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                shared,
                admission: Some(admission),
            },
        }
    }

    pub(super) fn rejected(name: &'static str) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { name },
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
            KindProj::Called {
                future,
                shared,
                admission,
            } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                if let Some(admission) = admission.take() {
                    shared.settle(admission, Verdict::of_result(&result));
                }
                Poll::Ready(result)
            }
            KindProj::Rejected { name } => Poll::Ready(Err(CircuitOpen::new(name).into())),
            KindProj::NotReady => {
                Poll::Ready(Err(Error::called_before_ready("CircuitBreaker").into()))
            }
        }
    }
}
