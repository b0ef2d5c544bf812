//! [`TraceParent`] and its ids: the W3C `traceparent` header value.

use std::{fmt, str::FromStr};

use super::error::{InvalidTraceParent, InvalidTraceParentKind as Kind};

/// A 16-byte W3C trace id, shown as 32 lower-case hex digits; never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

/// An 8-byte W3C span id, shown as 16 lower-case hex digits; never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

macro_rules! hex_id {
    ($id:ident, $len:literal) => {
        impl $id {
            /// A random id (never all zeros).
            pub fn random() -> Self {
                loop {
                    let bytes: [u8; $len] = rand::random();
                    if bytes != [0; $len] {
                        return $id(bytes);
                    }
                }
            }

            /// The id from its bytes; `None` for all zeros, which the W3C reserves for
            /// "invalid".
            pub fn from_bytes(bytes: [u8; $len]) -> Option<Self> {
                (bytes != [0; $len]).then_some($id(bytes))
            }

            /// The id's bytes.
            pub fn to_bytes(self) -> [u8; $len] {
                self.0
            }
        }

        impl fmt::Display for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
            }
        }

        impl fmt::Debug for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($id), "({})"), self)
            }
        }
    };
}

hex_id!(TraceId, 16);
hex_id!(SpanId, 8);

/// The value of a W3C `traceparent` header: version `00`, the trace id, the id of the span
/// the receiver is a child of, and the trace flags.
///
/// Parsing follows the W3C rules: lower-case hex, `-` separators, no all-zero id, version
/// `ff` refused, a later version accepted for its first four fields (and written back as
/// `00`).
///
/// ```
/// use lax_core::trace::{InvalidTraceParentKind, TraceParent};
///
/// let parent: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse()?;
/// assert!(parent.is_sampled());
/// assert_eq!(parent.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(parent.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
///
/// let zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01".parse::<TraceParent>();
/// assert_eq!(zero.unwrap_err().kind(), InvalidTraceParentKind::ZeroTraceId);
/// # Ok::<(), lax_core::trace::InvalidTraceParent>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace every span of the message's journey belongs to.
    pub trace_id: TraceId,
    /// The span the receiver's span is a child of.
    pub parent_id: SpanId,
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceParent {
    /// The "sampled" flag: the sender may have recorded its span.
    pub const SAMPLED: u8 = 0x01;
    /// Characters of a version-00 value.
    const LEN: usize = 55;

    /// The first span of a new trace, sampled.
    pub fn new_root() -> Self {
        TraceParent {
            trace_id: TraceId::random(),
            parent_id: SpanId::random(),
            flags: Self::SAMPLED,
        }
    }

    /// A child span's `traceparent`: the same trace and flags, a new span id.
    pub fn child(&self) -> Self {
        TraceParent {
            parent_id: SpanId::random(),
            ..*self
        }
    }

    /// True when the sampled flag is set.
    pub fn is_sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

/// Lower-case hex digits into bytes; `None` for anything else.
fn hex<const N: usize>(digits: &str) -> Option<[u8; N]> {
    let digits = digits.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut bytes = [0; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(bytes)
}

impl FromStr for TraceParent {
    type Err = InvalidTraceParent;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let invalid = |kind| InvalidTraceParent::new(kind, value);
        // HTTP may hand the value over with optional whitespace around it.
        let s = value.trim_matches([' ', '\t']);
        if !s.is_ascii() || s.len() < Self::LEN {
            return Err(invalid(Kind::Length));
        }
        let version = hex::<1>(&s[..2]).ok_or_else(|| invalid(Kind::Version))?[0];
        if version == 0xff {
            return Err(invalid(Kind::Version));
        }
        // Version 00 is exactly 55 characters; a later one may append `-` and more fields.
        if s.len() > Self::LEN && (version == 0 || s.as_bytes()[Self::LEN] != b'-') {
            return Err(invalid(Kind::Length));
        }
        if [2, 35, 52].iter().any(|&at| s.as_bytes()[at] != b'-') {
            return Err(invalid(Kind::Delimiter));
        }
        let not_hex = || invalid(Kind::NotHex);
        let trace_id = hex::<16>(&s[3..35]).ok_or_else(not_hex)?;
        let parent_id = hex::<8>(&s[36..52]).ok_or_else(not_hex)?;
        let flags = hex::<1>(&s[53..55]).ok_or_else(not_hex)?[0];
        Ok(TraceParent {
            trace_id: TraceId::from_bytes(trace_id).ok_or_else(|| invalid(Kind::ZeroTraceId))?,
            parent_id: SpanId::from_bytes(parent_id).ok_or_else(|| invalid(Kind::ZeroParentId))?,
            flags,
        })
    }
}
