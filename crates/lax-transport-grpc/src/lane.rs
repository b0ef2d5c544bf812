//! The members of the transport's [`lax_core::pool::Pool`]: lanes, each one HTTP/2 connection
//! (a tonic [`Channel`]) and, in stream mode, one long-lived `StreamPublish` stream on it.
//!
//! Which lane takes a publish, homes over several broker addresses, repair with backoff and
//! the metrics are the core pool's; this module only makes a lane for a broker address and
//! reports its death when the stream's ack reader ends.

use std::fmt;

use lax_core::{
    Error,
    pool::{Connect, Connected, Pool},
};
use lax_proto::broker::v1::broker_service_client::BrokerServiceClient;
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

use crate::{
    auth::BearerAuth,
    options::{GrpcOptions, PublishMode},
    session::{Session, SessionEnd},
    status::status_to_error,
};

/// A `BrokerService` client on a pooled connection that sends the bearer token; see
/// [`GrpcPublisher::broker_client`](crate::GrpcPublisher::broker_client).
pub type BrokerClient = BrokerServiceClient<InterceptedService<Channel, BearerAuth>>;

/// The transport's pool of lanes.
pub(crate) type Lanes = Pool<LaneConnector>;

/// Opens every lane of a pool per `options`, with the `{prefix}_grpc_connections` gauge and
/// the `{prefix}_connection_errors_total{type="grpc"}` counter. With `require_one`, fails when
/// no lane comes up; without, lanes that failed keep connecting in the background either way.
pub(crate) async fn connect(options: GrpcOptions, require_one: bool) -> Result<Lanes, Error> {
    let targets = options
        .endpoints()?
        .into_iter()
        .map(BrokerAddress)
        .collect();
    let prefix = &options.metrics_prefix;
    let healthy = metrics::gauge!(format!("{prefix}_grpc_connections"));
    let connection_errors =
        metrics::counter!(format!("{prefix}_connection_errors_total"), "type" => "grpc");
    let size = options.connection_pool_size;
    let (initial_backoff, max_backoff) = (
        options.reconnect_initial_backoff,
        options.reconnect_max_backoff,
    );
    let connector = LaneConnector {
        auth: BearerAuth::new(options.auth_token.as_deref())?,
        options,
    };
    let builder = Pool::builder(connector, targets)
        .size(size)
        .backoff(initial_backoff, max_backoff)
        .metrics(healthy, connection_errors);
    if require_one {
        builder.connect().await
    } else {
        builder.connect_lazy().await
    }
}

/// A broker address a lane connects to.
#[derive(Debug)]
pub(crate) struct BrokerAddress(Endpoint);

impl fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.uri().fmt(f)
    }
}

/// One lane: a connection, and its publish stream in stream mode.
#[derive(Debug)]
pub(crate) struct Lane {
    channel: Channel,
    /// Dropped (half-closing the stream) when the lane is replaced and its last publish is done.
    session: Option<Session>,
    auth: BearerAuth,
}

impl Lane {
    /// A client on the lane's connection.
    pub(crate) fn client(&self) -> BrokerClient {
        BrokerServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// The lane's connection, for other services' clients.
    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The lane's publish stream (in stream mode).
    pub(crate) fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// True while the lane's publish stream is open.
    pub(crate) fn has_open_session(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|session| !session.is_closed())
    }
}

/// Makes lanes for the pool.
#[derive(Debug)]
pub(crate) struct LaneConnector {
    auth: BearerAuth,
    options: GrpcOptions,
}

impl LaneConnector {
    pub(crate) fn auth(&self) -> &BearerAuth {
        &self.auth
    }

    pub(crate) fn options(&self) -> &GrpcOptions {
        &self.options
    }
}

impl Connect for LaneConnector {
    type Target = BrokerAddress;
    type Member = Lane;

    /// Connects to the broker at `address` and, in stream mode, opens the lane's stream, whose
    /// ack reader tells the pool when it ends.
    async fn connect(&self, address: &BrokerAddress) -> Result<Connected<Lane>, Error> {
        let endpoint = &address.0;
        let channel = endpoint.connect().await.map_err(|e| {
            Error::unavailable(format!(
                "cannot connect to the broker at {}: {e}",
                endpoint.uri()
            ))
            .with_source(e)
        })?;
        let mut lane = Lane {
            channel,
            session: None,
            auth: self.auth.clone(),
        };
        if self.options.mode == PublishMode::Unary {
            return Ok(Connected::new(lane));
        }
        let mut client = lane.client();
        let (session, reader) = tokio::time::timeout(
            self.options.connect_timeout,
            Session::open(&mut client, self.options.stream_buffer),
        )
        .await
        .map_err(|_| {
            Error::unavailable(format!(
                "the broker at {} did not open a publish stream within {:?}",
                endpoint.uri(),
                self.options.connect_timeout
            ))
        })?
        .map_err(|status| status_to_error(&status, false))?;
        lane.session = Some(session);
        Ok(Connected::new(lane).ends_when(async move {
            match reader.run().await {
                SessionEnd::Finished => "the broker ended the publish stream".to_owned(),
                SessionEnd::Failed(status) => format!("publish stream failed: {status}"),
            }
        }))
    }
}
