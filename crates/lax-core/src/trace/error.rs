//! [`InvalidTraceParent`]: why a `traceparent` value was refused.

use std::fmt;

/// What is wrong with a `traceparent` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InvalidTraceParentKind {
    /// Not 55 characters (version `00`), or a later version shorter than that or not
    /// followed by `-`.
    Length,
    /// The version is not two lower-case hex digits, or is the forbidden `ff`.
    Version,
    /// The fields are not separated by `-`.
    Delimiter,
    /// A field is not lower-case hex.
    NotHex,
    /// The trace id is all zeros.
    ZeroTraceId,
    /// The parent span id is all zeros.
    ZeroParentId,
}

impl fmt::Display for InvalidTraceParentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidTraceParentKind::Length => "wrong length",
            InvalidTraceParentKind::Version => "bad version",
            InvalidTraceParentKind::Delimiter => "fields not separated by '-'",
            InvalidTraceParentKind::NotHex => "a field is not lower-case hex",
            InvalidTraceParentKind::ZeroTraceId => "the trace id is all zeros",
            InvalidTraceParentKind::ZeroParentId => "the parent id is all zeros",
        })
    }
}

/// A `traceparent` value that does not follow the W3C format
/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent {value:?}: {kind}")]
pub struct InvalidTraceParent {
    kind: InvalidTraceParentKind,
    value: String,
}

impl InvalidTraceParent {
    /// Longest part of the refused value kept for the message.
    const SHOWN: usize = 64;

    pub(super) fn new(kind: InvalidTraceParentKind, value: &str) -> Self {
        let end = (0..=Self::SHOWN.min(value.len()))
            .rev()
            .find(|&i| value.is_char_boundary(i))
            .unwrap_or(0);
        InvalidTraceParent {
            kind,
            value: value[..end].to_owned(),
        }
    }

    /// What is wrong.
    pub fn kind(&self) -> InvalidTraceParentKind {
        self.kind
    }
}
