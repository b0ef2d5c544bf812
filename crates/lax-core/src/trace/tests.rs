use super::{capture::Capture, *};

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn kind_of(value: &str) -> InvalidTraceParentKind {
    value.parse::<TraceParent>().expect_err(value).kind()
}

#[test]
fn a_valid_traceparent_round_trips() {
    let parent: TraceParent = VALID.parse().unwrap();
    assert_eq!(
        parent.trace_id.to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(parent.parent_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(parent.flags, 1);
    assert!(parent.is_sampled());
    assert_eq!(parent.to_string(), VALID);
    let unsampled: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        .parse()
        .unwrap();
    assert!(!unsampled.is_sampled());
    // Optional whitespace around the value, as HTTP may leave it.
    assert_eq!(
        format!(" {VALID}\t").parse::<TraceParent>().unwrap(),
        parent
    );
}

#[test]
fn later_versions_are_read_for_their_known_fields() {
    let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-adds";
    let parent: TraceParent = later.parse().unwrap();
    assert_eq!(parent.to_string(), VALID, "written back as version 00");
    assert_eq!(
        kind_of("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"),
        InvalidTraceParentKind::Length
    );
}

#[test]
fn malformed_values_are_refused_with_their_reason() {
    use InvalidTraceParentKind as Kind;
    let cases = [
        ("", Kind::Length),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            Kind::Length,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            Kind::Length,
        ),
        (
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Kind::Version,
        ),
        (
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Kind::Version,
        ),
        (
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Kind::Delimiter,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            Kind::Delimiter,
        ),
        (
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            Kind::NotHex,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            Kind::NotHex,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z",
            Kind::NotHex,
        ),
        (
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            Kind::ZeroTraceId,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            Kind::ZeroParentId,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-é1",
            Kind::Length,
        ),
    ];
    for (value, kind) in cases {
        assert_eq!(kind_of(value), kind, "{value:?}");
    }
    let message = "nonsense".parse::<TraceParent>().unwrap_err().to_string();
    assert_eq!(message, "invalid traceparent \"nonsense\": wrong length");
    let long = "x".repeat(10_000);
    assert!(long.parse::<TraceParent>().unwrap_err().to_string().len() < 200);
}

#[test]
fn children_keep_the_trace_and_get_new_ids() {
    let root = TraceContext::new_root();
    let child = root.child();
    assert_eq!(child.parent.trace_id, root.parent.trace_id);
    assert_ne!(child.parent.parent_id, root.parent.parent_id);
    assert_eq!(child.parent.flags, root.parent.flags);
    assert_ne!(
        TraceContext::new_root().parent.trace_id,
        root.parent.trace_id
    );
}

#[test]
fn headers_carry_the_context_in_any_case() {
    let mut headers = Headers::from([("Traceparent", VALID), ("TraceState", "congo=t61rcWkgMzE")]);
    let context = TraceContext::from_headers(&headers).unwrap().unwrap();
    assert_eq!(context.parent.to_string(), VALID);
    assert_eq!(context.state.as_deref(), Some("congo=t61rcWkgMzE"));

    let child = context.child();
    child.inject(&mut headers);
    assert_eq!(
        headers.len(),
        2,
        "the differently spelt headers are replaced: {headers:?}"
    );
    assert_eq!(
        headers.get(TRACEPARENT_HEADER),
        Some(child.parent.to_string().as_str())
    );
    assert_eq!(TraceContext::from_headers(&headers).unwrap(), Some(child));

    assert_eq!(TraceContext::from_headers(&Headers::new()).unwrap(), None);
    let bad = Headers::from([(TRACEPARENT_HEADER, "00-zz")]);
    assert_eq!(
        TraceContext::from_headers(&bad).unwrap_err().kind(),
        InvalidTraceParentKind::Length
    );
    let empty_state = Headers::from([(TRACEPARENT_HEADER, VALID), (TRACESTATE_HEADER, "")]);
    assert_eq!(
        TraceContext::from_headers(&empty_state)
            .unwrap()
            .unwrap()
            .state,
        None
    );
}

#[tokio::test]
async fn the_current_context_is_the_scopes() {
    assert_eq!(TraceContext::current(), None);
    let context = TraceContext::new_root();
    let seen = context
        .clone()
        .scope(async { TraceContext::current() })
        .await;
    assert_eq!(seen, Some(context));
}

fn test_span() -> Span {
    tracing::info_span!(
        "test",
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
        invalid_traceparent = tracing::field::Empty,
    )
}

#[test]
fn identify_records_the_ids_of_an_enabled_span() {
    let capture = Capture::default();
    let parent = TraceContext::new_root();
    let (context, root) = tracing::subscriber::with_default(capture.clone(), || {
        (
            identify(&test_span(), Some(parent.clone())).unwrap(),
            identify(&test_span(), None).unwrap(),
        )
    });
    assert_eq!(context.parent.trace_id, parent.parent.trace_id);
    let captured = capture.captured();
    let child = &captured.spans[0];
    let id = |value: &dyn std::fmt::Display| Some(value.to_string());
    assert_eq!(
        child.field("trace_id").map(str::to_owned),
        id(&parent.parent.trace_id)
    );
    assert_eq!(
        child.field("span_id").map(str::to_owned),
        id(&context.parent.parent_id)
    );
    assert_eq!(
        child.field("parent_span_id").map(str::to_owned),
        id(&parent.parent.parent_id)
    );
    // Without a parent: a new trace, no parent span id.
    let first = &captured.spans[1];
    assert_eq!(
        first.field("trace_id").map(str::to_owned),
        id(&root.parent.trace_id)
    );
    assert_eq!(first.field("parent_span_id"), None);
}

#[test]
fn a_disabled_span_passes_the_context_through() {
    let parent = TraceContext::new_root();
    assert_eq!(identify(&Span::none(), Some(parent.clone())), Some(parent));
    assert_eq!(identify(&Span::none(), None), None);
}

#[test]
fn a_malformed_received_context_starts_a_new_trace_and_is_recorded() {
    let capture = Capture::default();
    let headers = Headers::from([(TRACEPARENT_HEADER, "garbage")]);
    let context = tracing::subscriber::with_default(capture.clone(), || {
        let span = test_span();
        let parent = received(&span, &headers);
        assert_eq!(parent, None);
        identify(&span, parent)
    });
    assert!(context.is_some(), "a root context");
    let captured = capture.captured();
    let invalid = captured.spans[0]
        .field("invalid_traceparent")
        .unwrap_or_default();
    assert!(invalid.contains("wrong length"), "{invalid}");
}
