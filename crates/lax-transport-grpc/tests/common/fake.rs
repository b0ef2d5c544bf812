//! An in-test tonic server implementing `BrokerService` and `StreamManager` with scripted
//! behaviour, for testing the transport's own logic without NATS.
//!
//! Behaviour by subject:
//! - `held.*`: the ack is held back until a message on `release` arrives; then `release` is
//!   acked first and the held messages in reverse order (acks out of order);
//! - `lost.*`: never acked;
//! - `refused.*`: failed with `FAILED_PRECONDITION`;
//! - anything else: stored, de-duplicated by message id (a repeat is acked as a duplicate
//!   with the first sequence).

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
};

use futures::Stream;
use lax_proto::broker::v1::{
    self as proto,
    broker_service_server::{BrokerService, BrokerServiceServer},
    stream_manager_server::{StreamManager, StreamManagerServer},
};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Code, Request, Response, Status, Streaming};

#[derive(Debug, Default)]
struct State {
    /// `authorization` metadata of every call, in arrival order.
    authorizations: Vec<Option<String>>,
    /// message id → sequence.
    stored: HashMap<String, u64>,
    /// Response senders of the open `StreamPublish` streams.
    streams: Vec<mpsc::WeakSender<Result<proto::PublishAck, Status>>>,
    /// Requests received, in arrival order.
    received: Vec<proto::PublishRequest>,
}

/// The fake broker; shared by the server's handlers and the test.
#[derive(Debug, Clone, Default)]
pub(crate) struct FakeBroker {
    state: Arc<Mutex<State>>,
}

/// A running fake broker server.
#[derive(Debug)]
pub(crate) struct FakeServer {
    pub(crate) broker: FakeBroker,
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    pub(crate) async fn start() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let broker = FakeBroker::default();
        let task = tokio::spawn({
            let broker = broker.clone();
            async move {
                tonic::transport::Server::builder()
                    .add_service(BrokerServiceServer::new(broker.clone()))
                    .add_service(StreamManagerServer::new(broker))
                    .serve_with_incoming(TcpListenerStream::new(listener))
                    .await
                    .unwrap();
            }
        });
        FakeServer { broker, addr, task }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl FakeBroker {
    pub(crate) fn authorizations(&self) -> Vec<Option<String>> {
        self.state.lock().unwrap().authorizations.clone()
    }

    pub(crate) fn sequence_of(&self, message_id: &str) -> Option<u64> {
        self.state.lock().unwrap().stored.get(message_id).copied()
    }

    pub(crate) fn received(&self) -> Vec<proto::PublishRequest> {
        self.state.lock().unwrap().received.clone()
    }

    pub(crate) fn open_streams(&self) -> usize {
        let mut state = self.state.lock().unwrap();
        state
            .streams
            .retain(|s| s.upgrade().is_some_and(|s| !s.is_closed()));
        state.streams.len()
    }

    /// Ends every open `StreamPublish` stream with `UNAVAILABLE`.
    pub(crate) async fn break_streams(&self) {
        let streams = std::mem::take(&mut self.state.lock().unwrap().streams);
        for stream in streams.iter().filter_map(mpsc::WeakSender::upgrade) {
            let _ = stream
                .send(Err(Status::unavailable("fake broker going away")))
                .await;
        }
    }

    fn record<T>(&self, request: &Request<T>) {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.state.lock().unwrap().authorizations.push(auth);
    }

    /// Stores one message: `Ok((sequence, duplicate))` or the refusal.
    fn store(&self, request: &proto::PublishRequest) -> Result<(u64, bool), Status> {
        let mut state = self.state.lock().unwrap();
        if request.subject.starts_with("refused.") {
            return Err(Status::failed_precondition("no stream for this tier"));
        }
        let next = state.stored.len() as u64 + 1;
        match state.stored.get(&request.message_id) {
            Some(&sequence) => Ok((sequence, true)),
            None => {
                state.stored.insert(request.message_id.clone(), next);
                Ok((next, false))
            }
        }
    }

    fn arrived(&self, request: &proto::PublishRequest) {
        self.state.lock().unwrap().received.push(request.clone());
    }

    fn ack(&self, request: &proto::PublishRequest) -> proto::PublishAck {
        let message_id = request.message_id.clone();
        match self.store(request) {
            Ok((sequence, duplicate)) => proto::PublishAck {
                message_id,
                success: true,
                sequence,
                duplicate,
                stream: "FAKE".into(),
                ..Default::default()
            },
            Err(status) => proto::PublishAck {
                message_id,
                error: status.message().to_owned(),
                error_code: status.code() as i32,
                ..Default::default()
            },
        }
    }

    fn response(&self, request: &proto::PublishRequest) -> proto::PublishResponse {
        let message_id = request.message_id.clone();
        match self.store(request) {
            Ok((sequence, duplicate)) => proto::PublishResponse {
                message_id,
                sequence,
                duplicate,
                stream: "FAKE".into(),
                ..Default::default()
            },
            Err(status) => proto::PublishResponse {
                message_id,
                error: status.message().to_owned(),
                error_code: status.code() as i32,
                ..Default::default()
            },
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl BrokerService for FakeBroker {
    async fn publish(
        &self,
        request: Request<proto::PublishRequest>,
    ) -> Result<Response<proto::PublishResponse>, Status> {
        self.record(&request);
        let request = request.into_inner();
        self.arrived(&request);
        if request.subject.starts_with("lost.") {
            std::future::pending::<()>().await;
        }
        let response = self.response(&request);
        if response.error_code != 0 {
            return Err(Status::new(Code::from(response.error_code), response.error));
        }
        Ok(Response::new(response))
    }

    async fn batch_publish(
        &self,
        request: Request<proto::BatchPublishRequest>,
    ) -> Result<Response<proto::BatchPublishResponse>, Status> {
        self.record(&request);
        let responses: Vec<_> = request
            .into_inner()
            .messages
            .iter()
            .map(|m| {
                self.arrived(m);
                self.response(m)
            })
            .collect();
        let failures = responses.iter().filter(|r| r.error_code != 0).count() as i32;
        Ok(Response::new(proto::BatchPublishResponse {
            success_count: responses.len() as i32 - failures,
            failure_count: failures,
            responses,
        }))
    }

    type StreamPublishStream = BoxStream<proto::PublishAck>;

    async fn stream_publish(
        &self,
        request: Request<Streaming<proto::PublishRequest>>,
    ) -> Result<Response<Self::StreamPublishStream>, Status> {
        self.record(&request);
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(1024);
        self.state.lock().unwrap().streams.push(tx.downgrade());
        let broker = self.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok(Some(request)) = requests.message().await {
                broker.arrived(&request);
                if request.subject.starts_with("held.") {
                    held.push(request);
                    continue;
                }
                if request.subject.starts_with("lost.") {
                    continue;
                }
                if tx.send(Ok(broker.ack(&request))).await.is_err() {
                    return;
                }
                if request.subject == "release" {
                    for request in held.drain(..).rev() {
                        if tx.send(Ok(broker.ack(&request))).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type SubscribeStream = BoxStream<proto::Message>;

    async fn subscribe(
        &self,
        _request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn create_consumer_group(
        &self,
        request: Request<proto::ConsumerGroupRequest>,
    ) -> Result<Response<proto::ConsumerGroup>, Status> {
        self.record(&request);
        let request = request.into_inner();
        if request.name == "existing" {
            return Err(Status::already_exists("group exists"));
        }
        Ok(Response::new(proto::ConsumerGroup {
            name: request.name,
            stream: request.stream,
            ..Default::default()
        }))
    }

    async fn ack(
        &self,
        _request: Request<proto::AckRequest>,
    ) -> Result<Response<proto::AckResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn nack(
        &self,
        _request: Request<proto::NackRequest>,
    ) -> Result<Response<proto::AckResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn in_progress(
        &self,
        _request: Request<proto::AckRequest>,
    ) -> Result<Response<proto::AckResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn term(
        &self,
        _request: Request<proto::AckRequest>,
    ) -> Result<Response<proto::AckResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn settle(
        &self,
        _request: Request<proto::SettleRequest>,
    ) -> Result<Response<proto::SettleResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
}

#[tonic::async_trait]
impl StreamManager for FakeBroker {
    async fn create_stream(
        &self,
        request: Request<proto::CreateStreamRequest>,
    ) -> Result<Response<proto::Stream>, Status> {
        self.record(&request);
        let request = request.into_inner();
        Ok(Response::new(proto::Stream {
            name: request.name,
            config: request.config,
            ..Default::default()
        }))
    }

    async fn get_stream_info(
        &self,
        request: Request<proto::GetStreamInfoRequest>,
    ) -> Result<Response<proto::StreamInfo>, Status> {
        self.record(&request);
        Err(Status::not_found(format!(
            "stream {} not found",
            request.into_inner().name
        )))
    }

    async fn update_stream(
        &self,
        request: Request<proto::UpdateStreamRequest>,
    ) -> Result<Response<proto::Stream>, Status> {
        self.record(&request);
        Err(Status::invalid_argument("bad config"))
    }

    async fn delete_stream(
        &self,
        request: Request<proto::DeleteStreamRequest>,
    ) -> Result<Response<proto::DeleteStreamResponse>, Status> {
        self.record(&request);
        Ok(Response::new(proto::DeleteStreamResponse {
            success: true,
            message: String::new(),
        }))
    }

    async fn list_streams(
        &self,
        request: Request<proto::ListStreamsRequest>,
    ) -> Result<Response<proto::ListStreamsResponse>, Status> {
        self.record(&request);
        Ok(Response::new(proto::ListStreamsResponse::default()))
    }
}
