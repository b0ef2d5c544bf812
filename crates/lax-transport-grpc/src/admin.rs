//! [`BrokerAdmin`]: stream administration and consumer groups.

use std::{future::Future, time::Duration};

use lax_core::{Error, validate::validate_name};
use lax_proto::broker::v1::{
    self as proto, broker_service_client::BrokerServiceClient,
    stream_manager_client::StreamManagerClient,
};
use tonic::{
    Code, Request, Response, Status, service::interceptor::InterceptedService, transport::Channel,
};

use crate::{
    auth::BearerAuth,
    convert::admin::{
        group_from_proto, group_request_to_proto, list_request_to_proto, stream_config_to_proto,
        stream_from_proto, stream_info_from_proto, stream_page_from_proto,
    },
    group::ConsumerGroupConfig,
    options::GrpcOptions,
    status::status_to_error,
    stream::{
        ConsumerGroup, ListStreamsOptions, Stream, StreamConfig, StreamInfo, StreamInfoOptions,
        StreamPage,
    },
};

type Intercepted = InterceptedService<Channel, BearerAuth>;

/// The outcome of [`BrokerAdmin::create_consumer_group`].
#[derive(Debug, Clone, PartialEq)]
pub enum GroupJoin {
    /// The broker created the group.
    Created(ConsumerGroup),
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
/// consumer groups, in LAX's own types ([`StreamConfig`], [`Stream`], [`StreamInfo`]…).
/// Names, subjects and settings are checked before anything is sent (`InvalidInput`); every
/// failure of the broker is mapped like a publish's
/// (see [`status_to_error`](crate::status_to_error)); every call has the options'
/// `call_timeout` as its deadline and carries the bearer token.
///
/// Cheap to clone; clones share the connection.
///
/// ```no_run
/// use std::time::Duration;
/// use lax_core::Tier;
/// use lax_transport_grpc::{BrokerAdmin, GrpcOptions, StreamConfig, StreamInfoOptions};
///
/// # async fn demo() -> Result<(), lax_core::Error> {
/// let admin = BrokerAdmin::connect(&GrpcOptions::new(["localhost:50051"])).await?;
/// let config = StreamConfig::new(["orders.>"])
///     .tier(Tier::Persistent)
///     .max_age(Duration::from_secs(7 * 24 * 3600));
/// let stream = admin.create_stream("ORDERS", config).await?;
/// println!("{} keeps {:?} replicas", stream.name, stream.config.replicas);
///
/// let info = admin
///     .stream_info("ORDERS", StreamInfoOptions::default().consumers(true))
///     .await?;
/// println!("{} messages, {} consumers", info.stream.state.messages, info.consumers.len());
/// # Ok(()) }
/// ```
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
        config: StreamConfig,
    ) -> Result<Stream, Error> {
        let name = name.into();
        validate_name("stream", &name)?;
        let request = self.request(proto::CreateStreamRequest {
            name,
            config: Some(stream_config_to_proto(&config)?),
        });
        self.call(self.streams.clone().create_stream(request))
            .await
            .map(stream_from_proto)
    }

    /// Describes stream `name`, with what `options` asks for beyond its configuration and
    /// state.
    pub async fn stream_info(
        &self,
        name: impl Into<String>,
        options: StreamInfoOptions,
    ) -> Result<StreamInfo, Error> {
        let name = name.into();
        validate_name("stream", &name)?;
        let request = self.request(proto::GetStreamInfoRequest {
            name: name.clone(),
            include_consumers: options.consumers,
            include_stats: options.stats,
        });
        self.call(self.streams.clone().get_stream_info(request))
            .await
            .map(|info| stream_info_from_proto(&name, info))
    }

    /// Changes stream `name`'s configuration (the broker refuses changes JetStream cannot
    /// make, such as its storage).
    pub async fn update_stream(
        &self,
        name: impl Into<String>,
        config: StreamConfig,
    ) -> Result<Stream, Error> {
        let name = name.into();
        validate_name("stream", &name)?;
        let request = self.request(proto::UpdateStreamRequest {
            name,
            config: Some(stream_config_to_proto(&config)?),
        });
        self.call(self.streams.clone().update_stream(request))
            .await
            .map(stream_from_proto)
    }

    /// Deletes stream `name` and its messages.
    pub async fn delete_stream(&self, name: impl Into<String>) -> Result<(), Error> {
        let name = name.into();
        validate_name("stream", &name)?;
        let request = self.request(proto::DeleteStreamRequest { name: name.clone() });
        let answer = self
            .call(self.streams.clone().delete_stream(request))
            .await?;
        if answer.success {
            Ok(())
        } else if answer.message.is_empty() {
            Err(Error::rejected(format!(
                "the broker did not delete stream {name}"
            )))
        } else {
            Err(Error::rejected(answer.message))
        }
    }

    /// Lists one page of streams.
    pub async fn list_streams(&self, options: ListStreamsOptions) -> Result<StreamPage, Error> {
        let request = self.request(list_request_to_proto(&options)?);
        self.call(self.streams.clone().list_streams(request))
            .await
            .map(stream_page_from_proto)
    }

    /// Creates consumer group `name` on `stream` for `subject_filter` (empty: the whole
    /// stream), or joins it when it exists: the broker's `ALREADY_EXISTS` is
    /// [`GroupJoin::AlreadyExisted`], not an error.
    ///
    /// # Errors
    ///
    /// `Rejected` when it exists with another configuration or the stream does not exist;
    /// `InvalidInput` for bad names, subjects or settings, before anything is sent.
    pub async fn create_consumer_group(
        &self,
        name: &str,
        stream: &str,
        subject_filter: &str,
        config: &ConsumerGroupConfig,
    ) -> Result<GroupJoin, Error> {
        let request = self.request(group_request_to_proto(
            name,
            stream,
            subject_filter,
            config,
        )?);
        match self
            .answer(self.broker.clone().create_consumer_group(request))
            .await?
        {
            Ok(group) => Ok(GroupJoin::Created(group_from_proto(group))),
            Err(status) if status.code() == Code::AlreadyExists => Ok(GroupJoin::AlreadyExisted),
            Err(status) => Err(status_to_error(&status, true)),
        }
    }
}
