//! A `tracing` subscriber recording every span's and event's fields, for lax-core's tests
//! (single-threaded: the spans entered are one stack).

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex},
};

use tracing::{
    Event, Metadata, Subscriber,
    field::{Field, Visit},
    span,
};

/// A span or an event as recorded.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) name: &'static str,
    pub(crate) fields: BTreeMap<&'static str, String>,
    /// The position in [`Captured::spans`] of the span it was made in.
    pub(crate) within: Option<usize>,
}

impl Recorded {
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

impl Visit for Recorded {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields.insert(field.name(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.fields.insert(field.name(), format!("{value:?}"));
    }
}

/// Everything recorded, in order.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    pub(crate) spans: Vec<Recorded>,
    pub(crate) events: Vec<Recorded>,
    /// Each span's metadata, for `Span::current()`.
    metadata: Vec<&'static Metadata<'static>>,
    entered: Vec<usize>,
}

/// The subscriber; clones share what it recorded.
#[derive(Debug, Default, Clone)]
pub(crate) struct Capture(Arc<Mutex<Captured>>);

impl Capture {
    pub(crate) fn captured(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.0.lock().unwrap()
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attributes: &span::Attributes<'_>) -> span::Id {
        let mut captured = self.captured();
        let mut span = Recorded {
            name: attributes.metadata().name(),
            fields: BTreeMap::new(),
            within: captured.entered.last().copied(),
        };
        attributes.record(&mut span);
        captured.spans.push(span);
        captured.metadata.push(attributes.metadata());
        span::Id::from_u64(captured.spans.len() as u64)
    }

    fn record(&self, id: &span::Id, values: &span::Record<'_>) {
        let at = id.into_u64() as usize - 1;
        values.record(&mut self.captured().spans[at]);
    }

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut captured = self.captured();
        let mut recorded = Recorded {
            name: event.metadata().name(),
            fields: BTreeMap::new(),
            within: captured.entered.last().copied(),
        };
        event.record(&mut recorded);
        captured.events.push(recorded);
    }

    fn enter(&self, id: &span::Id) {
        self.captured().entered.push(id.into_u64() as usize - 1);
    }

    fn exit(&self, _: &span::Id) {
        self.captured().entered.pop();
    }

    fn current_span(&self) -> tracing_core::span::Current {
        let captured = self.captured();
        match captured.entered.last() {
            Some(&at) => tracing_core::span::Current::new(
                span::Id::from_u64(at as u64 + 1),
                captured.metadata[at],
            ),
            None => tracing_core::span::Current::none(),
        }
    }
}
