//! [`BrokerAdmin`]: stream administration and consumer groups.

use std::{future::Future, time::Duration};

use lax_core::Error;
use lax_proto::broker::v1::{
    self as proto, broker_service_client::BrokerServiceClient,
    stream_manager_client::StreamManagerClient,
};
use tonic::{
    Code, Request, Response, Status, service::interceptor::InterceptedService, transport::Channel,
};

use crate::{auth::BearerAuth, options::GrpcOptions, status::status_to_error};

type Intercepted = InterceptedService<Channel, BearerAuth>;

/// The outcome of [`BrokerAdmin::create_consumer_group`].
#[derive(Debug, Clone, PartialEq)]
pub enum GroupJoin {
    /// The broker created the group (or returned the existing one).
    Created(proto::ConsumerGroup),
    /// The group already existed (`ALREADY_EXISTS`): join it.
    AlreadyExisted,
}

impl GroupJoin {
    /// True when the group existed before this call.
    pub fn already_existed(&self) -> bool {
        matches!(self, GroupJoin::AlreadyExisted)
    }
}

/// A typed client for the broker's administration calls: streams (`StreamManager`) and
/// consumer groups. Every failure is mapped like a publish's
/// (see [`status_to_error`](crate::status_to_error)); every call has the options'
/// `call_timeout` as its deadline and carries the bearer token.
///
/// Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct BrokerAdmin {
    broker: BrokerServiceClient<Intercepted>,
    streams: StreamManagerClient<Intercepted>,
    timeout: Duration,
}

impl BrokerAdmin {
    /// Connects to the first broker address of `options` that answers.
    pub async fn connect(options: &GrpcOptions) -> Result<Self, Error> {
        let auth = BearerAuth::new(options.auth_token.as_deref())?;
        let mut last_error = None;
        for endpoint in options.endpoints()? {
            match endpoint.connect().await {
                Ok(channel) => {
                    return Ok(BrokerAdmin::new(channel, auth, options.call_timeout));
                }
                Err(e) => {
                    last_error = Some(
                        Error::unavailable(format!(
                            "cannot connect to the broker at {}: {e}",
                            endpoint.uri()
                        ))
                        .with_source(e),
                    );
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::config("broker_addrs is empty")))
    }

    pub(crate) fn new(channel: Channel, auth: BearerAuth, timeout: Duration) -> Self {
        BrokerAdmin {
            broker: BrokerServiceClient::with_interceptor(channel.clone(), auth.clone()),
            streams: StreamManagerClient::with_interceptor(channel, auth),
            timeout,
        }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// Runs `call` with the deadline; its gRPC failure is left to the caller.
    async fn answer<T>(
        &self,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Result<T, Status>, Error> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map(|result| result.map(Response::into_inner))
            .map_err(|_| {
                Error::timed_out(format!(
                    "no answer from the broker within {:?}",
                    self.timeout
                ))
            })
    }

    async fn call<T>(
        &self,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, Error> {
        self.answer(call)
            .await?
            .map_err(|status| status_to_error(&status, true))
    }

    /// Creates stream `name`.
    pub async fn create_stream(
        &self,
        name: impl Into<String>,
        config: proto::StreamConfig,
    ) -> Result<proto::Stream, Error> {
        let request = self.request(proto::CreateStreamRequest {
            name: name.into(),
            config: Some(config),
        });
        self.call(self.streams.clone().create_stream(request)).await
    }

    /// Describes a stream.
    pub async fn stream_info(
        &self,
        request: proto::GetStreamInfoRequest,
    ) -> Result<proto::StreamInfo, Error> {
        let request = self.request(request);
        self.call(self.streams.clone().get_stream_info(request))
            .await
    }

    /// Changes stream `name`'s configuration.
    pub async fn update_stream(
        &self,
        name: impl Into<String>,
        config: proto::StreamConfig,
    ) -> Result<proto::Stream, Error> {
        let request = self.request(proto::UpdateStreamRequest {
            name: name.into(),
            config: Some(config),
        });
        self.call(self.streams.clone().update_stream(request)).await
    }

    /// Deletes stream `name`.
    pub async fn delete_stream(
        &self,
        name: impl Into<String>,
    ) -> Result<proto::DeleteStreamResponse, Error> {
        let request = self.request(proto::DeleteStreamRequest { name: name.into() });
        self.call(self.streams.clone().delete_stream(request)).await
    }

    /// Lists streams.
    pub async fn list_streams(
        &self,
        request: proto::ListStreamsRequest,
    ) -> Result<proto::ListStreamsResponse, Error> {
        let request = self.request(request);
        self.call(self.streams.clone().list_streams(request)).await
    }

    /// Creates a consumer group, or joins it when it exists: the broker's `ALREADY_EXISTS` is
    /// [`GroupJoin::AlreadyExisted`], not an error.
    pub async fn create_consumer_group(
        &self,
        request: proto::ConsumerGroupRequest,
    ) -> Result<GroupJoin, Error> {
        let request = self.request(request);
        match self
            .answer(self.broker.clone().create_consumer_group(request))
            .await?
        {
            Ok(group) => Ok(GroupJoin::Created(group)),
            Err(status) if status.code() == Code::AlreadyExists => Ok(GroupJoin::AlreadyExisted),
            Err(status) => Err(status_to_error(&status, true)),
        }
    }
}
