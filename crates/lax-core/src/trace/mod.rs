//! W3C Trace Context across NATS, the broker and JetStream, and the identity of LAX's
//! `tracing` spans.
//!
//! A message carries its trace in two headers, as HTTP does
//! ([W3C Trace Context](https://www.w3.org/TR/trace-context/)): `traceparent`
//! (`00-<trace id>-<parent span id>-<flags>`, a [`TraceParent`]) and, optionally,
//! `tracestate` (vendor data, passed on unchanged). [`TraceContext`] reads them from and
//! writes them into [`Headers`].
//!
//! LAX opens one `tracing` span per step a message takes, with stable names:
//!
//! | span | where | W3C parent |
//! |---|---|---|
//! | `lax.publish` | client, one per logical publish (its retries are events inside it) | the message's own `traceparent` header, else [`TraceContext::current`] |
//! | `lax.broker.publish` | broker, per message written to JetStream | the request's `traceparent` |
//! | `lax.broker.deliver` | broker, per message handed to a subscriber | the stored message's `traceparent` |
//! | `lax.process` | client, per message a subscriber's handler runs on | the delivered message's `traceparent` |
//!
//! Each such span records its W3C identity in the fields `trace_id`, `span_id` and
//! `parent_span_id` ([`identify`]) and sends its own `traceparent` on, so every span of a
//! message's journey shares one trace id and names its parent. A span no subscriber wants
//! (none installed, or filtered out) costs no id and no header: the incoming context passes
//! through unchanged, as the W3C recommends for a participant that does not trace.
//!
//! No OpenTelemetry is needed for this. With the `opentelemetry` feature, a span that a
//! `tracing-opentelemetry` layer records takes its ids from OpenTelemetry instead: the
//! message's context becomes the OpenTelemetry span's parent and the OpenTelemetry span's
//! own ids are the ones recorded and sent on, so the spans a client and a broker export
//! join into one trace in the collector. [`OtlpTracing`] sets up such an export over OTLP.
//!
//! ```
//! use lax_core::Headers;
//! use lax_core::trace::{TraceContext, TraceParent};
//!
//! let incoming: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse()?;
//! let context = TraceContext::new(incoming).child();
//! assert_eq!(context.parent.trace_id, incoming.trace_id);
//! assert_ne!(context.parent.parent_id, incoming.parent_id);
//!
//! let mut headers = Headers::new();
//! context.inject(&mut headers);
//! assert_eq!(TraceContext::from_headers(&headers)?, Some(context));
//! # Ok::<(), lax_core::trace::InvalidTraceParent>(())
//! ```

#[cfg(test)]
pub(crate) mod capture;
mod error;
#[cfg(feature = "opentelemetry")]
mod otel;
#[cfg(feature = "opentelemetry")]
mod otlp;
mod parent;

use std::future::Future;

use tracing::Span;

pub use self::error::{InvalidTraceParent, InvalidTraceParentKind};
#[cfg(feature = "opentelemetry")]
pub use self::otlp::{OtlpError, OtlpLayer, OtlpTracing};
pub use self::parent::{SpanId, TraceId, TraceParent};
use crate::message::Headers;

/// The W3C header carrying the trace id, the sender's span id and the flags.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The W3C header carrying vendor-specific trace data, passed on unchanged.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// A message's trace: its `traceparent` and `tracestate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id and the span the next hop is a child of.
    pub parent: TraceParent,
    /// The `tracestate` list, kept as received.
    pub state: Option<String>,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

impl TraceContext {
    /// A context without `tracestate`.
    pub fn new(parent: TraceParent) -> Self {
        TraceContext {
            parent,
            state: None,
        }
    }

    /// The first span of a new trace.
    pub fn new_root() -> Self {
        TraceContext::new(TraceParent::new_root())
    }

    /// A child: the same trace and state, a new span id.
    pub fn child(&self) -> Self {
        TraceContext {
            parent: self.parent.child(),
            state: self.state.clone(),
        }
    }

    /// The context in `headers`, whatever the case of the header names; `None` without a
    /// `traceparent`. An empty `tracestate` counts as none.
    ///
    /// # Errors
    ///
    /// [`InvalidTraceParent`] when `traceparent` is malformed.
    pub fn from_headers(headers: &Headers) -> Result<Option<Self>, InvalidTraceParent> {
        let (mut parent, mut state) = (None, None);
        for (name, value) in headers.iter() {
            if name.eq_ignore_ascii_case(TRACEPARENT_HEADER) {
                parent = Some(value);
            } else if name.eq_ignore_ascii_case(TRACESTATE_HEADER) && !value.is_empty() {
                state = Some(value);
            }
        }
        let Some(parent) = parent else {
            return Ok(None);
        };
        Ok(Some(TraceContext {
            parent: parent.parse()?,
            state: state.map(str::to_owned),
        }))
    }

    /// Writes `traceparent` (and `tracestate`, when there is one) into `headers`, replacing
    /// any trace headers there, whatever their case.
    pub fn inject(&self, headers: &mut Headers) {
        remove_trace_headers(headers);
        headers.insert(TRACEPARENT_HEADER, self.parent.to_string());
        if let Some(state) = &self.state {
            headers.insert(TRACESTATE_HEADER, state.clone());
        }
    }

    /// The context of the task this runs in, set by [`scope`](Self::scope): `lax.process`
    /// runs each handler in its span's context, so that what the handler publishes continues
    /// the trace; an HTTP handler can do the same with the incoming request's context.
    ///
    /// With the `opentelemetry` feature and no such context, the current `tracing` span's
    /// OpenTelemetry context (an application's own request span, say) when there is one.
    pub fn current() -> Option<Self> {
        let scoped = CURRENT.try_with(Clone::clone).ok();
        #[cfg(feature = "opentelemetry")]
        let scoped = scoped.or_else(otel::current);
        scoped
    }

    /// Runs `future` with this as the [`current`](Self::current) context.
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, future)
    }
}

/// Removes `traceparent` and `tracestate` in any case, so a context written after has no
/// stale twin under another spelling.
fn remove_trace_headers(headers: &mut Headers) {
    let stale: Vec<String> = headers
        .iter()
        .filter(|(name, _)| {
            name.eq_ignore_ascii_case(TRACEPARENT_HEADER)
                || name.eq_ignore_ascii_case(TRACESTATE_HEADER)
        })
        .map(|(name, _)| name.to_owned())
        .collect();
    for name in stale {
        headers.remove(&name);
    }
}

/// Gives `span` its W3C identity and returns the context to send on.
///
/// An enabled span becomes a child of `parent` (or, without one, the root of a new trace)
/// and records `trace_id`, `span_id` and `parent_span_id` — fields the span must declare
/// (as `tracing::field::Empty`). A disabled span gets no identity and `parent` is returned
/// as it is, so that a hop that does not trace passes the context through.
///
/// Call it before the span is first entered. With the `opentelemetry` feature, a span an
/// OpenTelemetry layer records gets `parent` as its OpenTelemetry parent and keeps the ids
/// OpenTelemetry gives it; LAX draws the ids of any other span.
pub fn identify(span: &Span, parent: Option<TraceContext>) -> Option<TraceContext> {
    if span.is_disabled() {
        return parent;
    }
    #[cfg(feature = "opentelemetry")]
    let own = otel::identity(span, parent.as_ref());
    #[cfg(not(feature = "opentelemetry"))]
    let own: Option<TraceParent> = None;
    let context = match (own, &parent) {
        (Some(own), parent) => TraceContext {
            parent: own,
            state: parent.as_ref().and_then(|parent| parent.state.clone()),
        },
        (None, Some(parent)) => parent.child(),
        (None, None) => TraceContext::new_root(),
    };
    span.record("trace_id", tracing::field::display(context.parent.trace_id));
    span.record("span_id", tracing::field::display(context.parent.parent_id));
    if let Some(parent) = parent {
        span.record(
            "parent_span_id",
            tracing::field::display(parent.parent.parent_id),
        );
    }
    Some(context)
}

/// The context a received message carries, for the span about to handle it: a malformed
/// `traceparent` starts a new trace (as the W3C asks of a receiver) and is recorded in the
/// span's `invalid_traceparent` field.
pub fn received(span: &Span, headers: &Headers) -> Option<TraceContext> {
    match TraceContext::from_headers(headers) {
        Ok(context) => context,
        Err(invalid) => {
            span.record("invalid_traceparent", tracing::field::display(&invalid));
            None
        }
    }
}

#[cfg(test)]
mod tests;
