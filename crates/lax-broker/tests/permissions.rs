//! Per-token permissions over real gRPC calls: a token for `orders.>` can neither publish to
//! nor read `payments.*` by any spelling, stream administration needs an admin token, and a
//! refused call leaves JetStream untouched.

mod common;

use async_nats::jetstream;
use common::{Harness, request};
use futures::TryStreamExt as _;
use lax_broker::Permissions;
use lax_proto::broker::v1::{
    BatchPublishRequest, ConsumerGroupRequest, CreateStreamRequest, DeleteStreamRequest,
    ListStreamsRequest, StreamConfig, SubscribeRequest, broker_service_client::BrokerServiceClient,
    stream_manager_client::StreamManagerClient,
};
use tonic::{
    Code, Request, Status,
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

const PERMISSIONS: &str = r#"{"tokens": [
    {"name": "orders-service", "token": "orders-t0ken",
     "publish": {"allow": ["orders.>"]}, "subscribe": {"allow": ["orders.>"]}},
    {"name": "ops", "token": "ops-t0ken",
     "publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}, "admin": true}
]}"#;

#[derive(Clone)]
struct Bearer(Option<AsciiMetadataValue>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

fn bearer(token: Option<&str>) -> Bearer {
    Bearer(token.map(|t| format!("Bearer {t}").try_into().expect("header value")))
}

type Broker = BrokerServiceClient<InterceptedService<Channel, Bearer>>;
type Streams = StreamManagerClient<InterceptedService<Channel, Bearer>>;

async fn clients_as(h: &Harness, token: Option<&str>) -> (Broker, Streams) {
    let channel = Channel::from_shared(format!("http://{}", h.broker.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .expect("gRPC connects");
    (
        BrokerServiceClient::with_interceptor(channel.clone(), bearer(token)),
        StreamManagerClient::with_interceptor(channel, bearer(token)),
    )
}

async fn stream_names(h: &Harness) -> Vec<String> {
    let js = jetstream::new(h.nats_client().await);
    let mut names = js.stream_names();
    let mut all = Vec::new();
    while let Some(name) = names.try_next().await.expect("stream names") {
        all.push(name);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_orders_cannot_publish_to_or_read_payments() {
    let h = Harness::start_with(|config| {
        config.permissions = Some(Permissions::from_json(PERMISSIONS).unwrap());
    })
    .await;
    let (mut orders, mut orders_streams) = clients_as(&h, Some("orders-t0ken")).await;
    let (mut ops, mut ops_streams) = clients_as(&h, Some("ops-t0ken")).await;

    // No token, an unknown one: UNAUTHENTICATED, on both services.
    for token in [None, Some("guess"), Some("orders-t0ke")] {
        let (mut broker, mut streams) = clients_as(&h, token).await;
        let status = broker
            .publish(request("orders.created", "x", "persistent"))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}");
        let status = streams
            .list_streams(ListStreamsRequest::default())
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}");
    }

    let ack = orders
        .publish(request("orders.created", "x", "persistent"))
        .await
        .expect("orders-service publishes to orders.created")
        .into_inner();
    assert_eq!(ack.stream, "ORDERS");

    for subject in [
        "payments.x",
        "payments.>",
        "payments.*",
        ">",
        "*.x",
        "orders..x",
        "orders.x payments.x",
        " payments.x",
        "payments.x\t",
        "$JS.API.STREAM.DELETE.ORDERS",
        "$JS.API.STREAM.CREATE.PAYMENTS",
    ] {
        let status = orders
            .publish(request(subject, "x", "persistent"))
            .await
            .expect_err(subject);
        // A well-formed subject outside the grant is PERMISSION_DENIED; wildcards, empty
        // tokens and whitespace are no subject at all: INVALID_ARGUMENT. Refused either way.
        let malformed = subject.contains(['*', '>', ' ', '\t']) || subject.contains("..");
        let expected = if malformed {
            Code::InvalidArgument
        } else {
            Code::PermissionDenied
        };
        assert_eq!(status.code(), expected, "{subject:?}: {status:?}");
    }
    // Even the all-subjects ops token does not reach the JetStream API through Publish.
    let status = ops
        .publish(request("$JS.API.STREAM.DELETE.ORDERS", "", "persistent"))
        .await
        .expect_err("system subject");
    assert_eq!(status.code(), Code::PermissionDenied);

    // Nothing refused reached JetStream: no PAYMENTS stream was auto-created, ORDERS is
    // intact with its one message.
    assert_eq!(stream_names(&h).await, ["ORDERS"]);
    assert_eq!(h.stream_messages("ORDERS").await, 1);

    // A batch is judged message by message.
    let batch = orders
        .batch_publish(BatchPublishRequest {
            messages: vec![
                request("orders.a", "1", "persistent"),
                request("payments.a", "2", "persistent"),
            ],
            default_options: None,
        })
        .await
        .expect("the batch call is answered")
        .into_inner();
    assert_eq!((batch.success_count, batch.failure_count), (1, 1));
    assert_eq!(batch.responses[1].error_code, Code::PermissionDenied as i32);

    // StreamPublish: the denied message gets a failed ack, the call goes on.
    let mut acks = orders
        .stream_publish(futures::stream::iter([
            request("payments.b", "1", "persistent"),
            request("orders.b", "2", "persistent"),
        ]))
        .await
        .expect("StreamPublish starts")
        .into_inner();
    let mut codes = Vec::new();
    while let Some(ack) = acks.message().await.expect("acks") {
        codes.push((ack.success, ack.error_code));
    }
    codes.sort();
    assert_eq!(codes, [(false, Code::PermissionDenied as i32), (true, 0)]);
    assert_eq!(stream_names(&h).await, ["ORDERS"]);

    // Reading: payments, everything, or a wildcard reaching outside orders.
    for subject in ["payments.x", ">", "*.x", "orders.x payments.x", "$JS.API.>"] {
        let status = orders
            .subscribe(SubscribeRequest {
                subject: subject.into(),
                ..Default::default()
            })
            .await
            .expect_err(subject);
        let expected = if subject.contains(' ') {
            Code::InvalidArgument
        } else {
            Code::PermissionDenied
        };
        assert_eq!(status.code(), expected, "{subject:?}");
    }
    let status = orders
        .create_consumer_group(ConsumerGroupRequest {
            name: "g".into(),
            stream: "ORDERS".into(),
            subject_filter: String::new(),
            config: None,
        })
        .await
        .expect_err("a whole-stream group needs admin");
    assert_eq!(status.code(), Code::PermissionDenied);

    // Stream administration needs the admin token.
    let status = orders_streams
        .delete_stream(DeleteStreamRequest {
            name: "ORDERS".into(),
        })
        .await
        .expect_err("not admin");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = orders_streams
        .create_stream(CreateStreamRequest {
            name: "PAYMENTS".into(),
            config: Some(StreamConfig {
                subjects: vec!["payments.>".into()],
                ..Default::default()
            }),
        })
        .await
        .expect_err("not admin");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(stream_names(&h).await, ["ORDERS"]);
    orders_streams
        .list_streams(ListStreamsRequest::default())
        .await
        .expect("any valid token lists streams");
    ops_streams
        .delete_stream(DeleteStreamRequest {
            name: "ORDERS".into(),
        })
        .await
        .expect("the admin token deletes");
    assert!(stream_names(&h).await.is_empty());
    drop(ops);
}
