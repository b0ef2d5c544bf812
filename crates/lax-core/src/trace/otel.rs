//! OpenTelemetry as the source of span identity (feature `opentelemetry`).
//!
//! When a `tracing-opentelemetry` layer records a span, the OpenTelemetry span *is* the span
//! a collector shows, so its ids are the ones LAX must send on: [`identity`] makes the
//! message's context the OpenTelemetry parent (before the span starts) and reads the ids
//! OpenTelemetry gave the span back. LAX draws ids itself only for spans no
//! OpenTelemetry layer records. One id per span, whoever draws it.

use std::str::FromStr as _;

use opentelemetry::trace::{
    SpanContext, SpanId as OtelSpanId, TraceContextExt as _, TraceFlags, TraceId as OtelTraceId,
    TraceState,
};
use tracing::Span;
use tracing_opentelemetry::{OpenTelemetrySpanExt as _, SetParentError};

use super::{SpanId, TraceContext, TraceId, TraceParent};

/// The W3C identity OpenTelemetry gave `span`, made a child of `parent` first; `None` when
/// no OpenTelemetry layer records the span.
pub(super) fn identity(span: &Span, parent: Option<&TraceContext>) -> Option<TraceParent> {
    // A span already started (entered, or asked for its context) keeps its parent; the ids
    // read below are still the ones it is exported with.
    if let Some(parent) = parent
        && let Err(SetParentError::LayerNotFound | SetParentError::SpanDisabled) =
            span.set_parent(remote_context(parent))
    {
        return None;
    }
    from_span_context(span.context().span().span_context())
}

/// The OpenTelemetry context of the current `tracing` span, when an OpenTelemetry layer
/// records it: an application's own span (an HTTP request's, say) that a publish runs in.
pub(super) fn current() -> Option<TraceContext> {
    let context = Span::current().context();
    let span_context = context.span().span_context().clone();
    let parent = from_span_context(&span_context)?;
    let state = span_context.trace_state().header();
    Some(TraceContext {
        parent,
        state: (!state.is_empty()).then_some(state),
    })
}

/// `context` as the remote parent OpenTelemetry expects; a `tracestate` OpenTelemetry cannot
/// parse is left out of it (LAX still passes it on as received).
fn remote_context(context: &TraceContext) -> opentelemetry::Context {
    let state = context
        .state
        .as_deref()
        .and_then(|state| TraceState::from_str(state).ok())
        .unwrap_or_default();
    opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
        OtelTraceId::from_bytes(context.parent.trace_id.to_bytes()),
        OtelSpanId::from_bytes(context.parent.parent_id.to_bytes()),
        TraceFlags::new(context.parent.flags),
        true,
        state,
    ))
}

fn from_span_context(span_context: &SpanContext) -> Option<TraceParent> {
    if !span_context.is_valid() {
        return None;
    }
    Some(TraceParent {
        trace_id: TraceId::from_bytes(span_context.trace_id().to_bytes())?,
        parent_id: SpanId::from_bytes(span_context.span_id().to_bytes())?,
        flags: span_context.trace_flags().to_u8(),
    })
}
