//! Starting, running and stopping a broker.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use async_nats::{ConnectOptions, Event, jetstream};
use lax_proto::broker::v1::{
    broker_service_server::BrokerServiceServer, stream_manager_server::StreamManagerServer,
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{
    codec::CompressionEncoding,
    server::NamedService,
    service::interceptor::InterceptedService,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    config::BrokerConfig,
    consumer::{ConsumeLimits, ConsumerGroups, ConsumerSettings},
    error::BrokerError,
    jsapi::JsApi,
    metrics::{self, BrokerMetrics},
    publish::{PublishCore, PublishSettings},
    routing::StreamRouter,
    service::BrokerServiceImpl,
    streams::StreamManagerImpl,
};

/// The services whose health follows the NATS connection ("" is the server as a whole).
const HEALTH_SERVICES: [&str; 3] = [
    "",
    <BrokerServiceServer<BrokerServiceImpl> as NamedService>::NAME,
    <StreamManagerServer<StreamManagerImpl> as NamedService>::NAME,
];

/// Longest wait for NATS to take the last writes at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the gRPC server pings an idle HTTP/2 connection, and how long it waits for the
/// answer before closing it: a client that vanished without a FIN frees its streams (and the
/// messages they hold) within seconds, not at the next TCP timeout.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalive on accepted connections, for peers that stop answering below HTTP/2.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// How often the broker pings NATS; two unanswered pings count as a lost connection.
const NATS_PING_INTERVAL: Duration = Duration::from_secs(1);

/// First pause between reconnection attempts; it doubles up to the configured maximum.
const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(50);

/// The LAX broker. Start one with [`Broker::start`] or, to hand it pre-bound sockets,
/// [`Broker::builder`].
///
/// ```no_run
/// use lax_broker::{Broker, BrokerConfig};
///
/// # async fn demo() -> Result<(), lax_broker::BrokerError> {
/// let mut config = BrokerConfig::new(["nats://127.0.0.1:4222"]);
/// config.listen = "127.0.0.1:0".parse().unwrap();
/// config.metrics_listen = "127.0.0.1:0".parse().unwrap();
/// let broker = Broker::start(config).await?;
/// println!("gRPC on {}, metrics on {:?}", broker.grpc_addr(), broker.metrics_addr());
/// broker.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Broker;

impl Broker {
    /// A builder for a broker with `config`.
    pub fn builder(config: BrokerConfig) -> BrokerBuilder {
        BrokerBuilder {
            config,
            grpc_listener: None,
            metrics_listener: None,
        }
    }

    /// Binds, connects to NATS and starts serving; see [`BrokerBuilder::start`].
    ///
    /// # Errors
    ///
    /// As [`BrokerBuilder::start`].
    pub async fn start(config: BrokerConfig) -> Result<RunningBroker, BrokerError> {
        Self::builder(config).start().await
    }
}

/// Sets up a broker before starting it.
#[derive(Debug)]
pub struct BrokerBuilder {
    config: BrokerConfig,
    grpc_listener: Option<TcpListener>,
    metrics_listener: Option<TcpListener>,
}

impl BrokerBuilder {
    /// Serves gRPC on this already-bound listener instead of binding `config.listen`.
    pub fn grpc_listener(mut self, listener: TcpListener) -> Self {
        self.grpc_listener = Some(listener);
        self
    }

    /// Serves `/metrics` on this already-bound listener instead of binding
    /// `config.metrics_listen`.
    pub fn metrics_listener(mut self, listener: TcpListener) -> Self {
        self.metrics_listener = Some(listener);
        self
    }

    /// The configuration the broker will run with.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Validates the configuration, binds the listeners, connects to NATS (waiting up to the
    /// connect timeout for the first connection, then going on reconnecting in the
    /// background, NOT_SERVING meanwhile) and starts serving.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Config`] for a bad configuration, [`BrokerError::Bind`] when a socket
    /// cannot be bound, [`BrokerError::Nats`] when the NATS options are unusable (such as a
    /// malformed URL) or when NATS refuses the broker's credentials or TLS handshake — those
    /// do not heal by retrying, so the broker does not start. An unreachable NATS is not an
    /// error: the broker serves NOT_SERVING and keeps reconnecting.
    pub async fn start(self) -> Result<RunningBroker, BrokerError> {
        let config = self.config;
        config.validate()?;
        if config.replicated_replicas < 3 {
            tracing::warn!(
                replicated_replicas = config.replicated_replicas,
                "replicated-tier streams get fewer than 3 replicas; fine for a single-node dev \
                 server, not for production"
            );
        }
        let grpc_listener = match self.grpc_listener {
            Some(listener) => listener,
            None => bind(config.listen).await?,
        };
        let grpc_addr = local_addr(&grpc_listener, config.listen)?;
        let metrics_listener = match (self.metrics_listener, config.no_metrics) {
            (Some(listener), _) => Some(listener),
            (None, true) => None,
            (None, false) => Some(bind(config.metrics_listen).await?),
        };
        let metrics_addr = metrics_listener
            .as_ref()
            .map(|l| local_addr(l, config.metrics_listen))
            .transpose()?;

        let metrics = BrokerMetrics::new();
        let (reporter, health_service) = tonic_health::server::health_reporter();
        // Publishing and consuming get a connection each: a subscriber that overruns its
        // connection (a slow-consumer disconnect) must not cut publishers off, and the reverse.
        let (connected_tx, connected_rx) = watch::channel(false);
        let client = connect(&config, "lax-broker", connected_tx).await?;
        let (consume_connected_tx, consume_connected_rx) = watch::channel(false);
        let consume_client = connect(&config, "lax-broker-consume", consume_connected_tx).await?;
        let shutdown = CancellationToken::new();
        let health_task = tokio::spawn(follow_connection(
            [connected_rx.clone(), consume_connected_rx.clone()],
            reporter,
            metrics.clone(),
            shutdown.clone(),
        ));
        let publish_connection = connected_rx.clone();
        let connect_timeout = Duration::from_millis(config.nats_connect_timeout_ms);
        let both_up = async {
            let (mut publish, mut consume) = (connected_rx, consume_connected_rx);
            let _ = publish.wait_for(|up| *up).await;
            let _ = consume.wait_for(|up| *up).await;
        };
        if tokio::time::timeout(connect_timeout, both_up)
            .await
            .is_err()
        {
            tracing::warn!(urls = ?config.resolved_nats_urls(), "NATS not reachable yet; serving NOT_SERVING and retrying");
        }

        let api = JsApi::new(client.clone(), config.publish_timeout());
        // Acks are awaited under the broker's own deadlines; the context's timeout only
        // backstops them.
        let max_inflight = config.max_inflight as usize;
        let publishing = jetstream::ContextBuilder::new()
            .timeout(lax_core::Limits::DEFAULT_MAX_TIMEOUT)
            .max_ack_inflight(max_inflight.saturating_mul(2))
            .backpressure_on_inflight(true)
            .build(client.clone());
        let router = Arc::new(StreamRouter::new(
            api.clone(),
            Duration::from_millis(config.stream_cache_ttl_ms),
            config.auto_create_streams(),
            usize::from(config.replicated_replicas),
        ));
        let core = Arc::new(PublishCore::new(
            client.clone(),
            publish_connection,
            publishing,
            Arc::clone(&router),
            PublishSettings {
                default_timeout: config.publish_timeout(),
                max_inflight,
            },
            metrics.clone(),
        ));
        let broker_service = BrokerServiceImpl::new(
            core,
            ConsumerGroups::new(
                JsApi::new(consume_client.clone(), config.publish_timeout()),
                consume_client.clone(),
                ConsumerSettings {
                    dead_letter_replicas: usize::from(config.replicated_replicas),
                    request_timeout: config.publish_timeout(),
                    limits: ConsumeLimits {
                        subscriber_messages: config.subscriber_max_inflight as usize,
                        subscriber_bytes: config.subscriber_max_inflight_bytes,
                        total_messages: config.consume_max_inflight,
                        total_bytes: config.consume_max_inflight_bytes,
                    },
                    max_lease: Duration::from_millis(config.max_lease_ms),
                    metrics: metrics.clone(),
                },
                shutdown.clone(),
            ),
            shutdown.clone(),
            config.stream_window as usize,
            config.batch_window as usize,
        );
        let stream_manager = StreamManagerImpl::new(api.clone(), router, metrics.clone());
        // Both reflection versions: grpcurl and grpcui ask v1, while Postman, Evans, older
        // grpcurl and Python's grpcio-reflection ask v1alpha.
        let reflection_builder = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(lax_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_error =
            |e| BrokerError::Serve(format!("building the reflection service: {e}"));
        let reflection = reflection_builder().build_v1().map_err(reflection_error)?;
        let reflection_v1alpha = reflection_builder()
            .build_v1alpha()
            .map_err(reflection_error)?;

        let max_request = config.max_request_bytes;
        // Health and reflection stay open; the broker's own services need the token (if set).
        let auth = crate::security::require_bearer_token(&config)?;
        let router = crate::security::with_tls(Server::builder(), &config)?
            .concurrency_limit_per_connection(config.max_concurrent_requests as usize)
            .max_concurrent_streams(config.max_concurrent_requests)
            .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
            .load_shed(true)
            .layer(
                tower_http::trace::TraceLayer::new_for_grpc()
                    .on_failure(crate::answer_log::AnswerLog::new()),
            )
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(InterceptedService::new(
                BrokerServiceServer::new(broker_service)
                    .max_decoding_message_size(max_request)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .send_compressed(CompressionEncoding::Gzip),
                auth.clone(),
            ))
            .add_service(InterceptedService::new(
                StreamManagerServer::new(stream_manager)
                    .max_decoding_message_size(max_request)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .send_compressed(CompressionEncoding::Gzip),
                auth,
            ));
        // tonic sets TCP_NODELAY only on sockets it binds itself: without it, Nagle holds a
        // small response (an ack) back until the client's delayed ACK, up to 40 ms per call.
        let incoming = TcpIncoming::from(grpc_listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(TCP_KEEPALIVE));
        let grpc = tokio::spawn(
            router.serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned()),
        );
        // Ends with `shutdown`, like the endpoint.
        tokio::spawn(metrics::upkeep(metrics.clone(), shutdown.clone()));
        let metrics_task = metrics_listener.map(|listener| {
            tokio::spawn(metrics::serve(
                listener,
                metrics.clone(),
                api,
                shutdown.clone(),
            ))
        });
        tracing::info!(%grpc_addr, ?metrics_addr, "LAX broker serving");
        Ok(RunningBroker {
            grpc_addr,
            metrics_addr,
            metrics,
            clients: [client, consume_client],
            shutdown,
            grpc,
            metrics_task,
            health_task,
            shutdown_timeout: Duration::from_millis(config.shutdown_timeout_ms),
        })
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, BrokerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BrokerError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, asked: SocketAddr) -> Result<SocketAddr, BrokerError> {
    listener.local_addr().map_err(|source| BrokerError::Bind {
        addr: asked,
        source,
    })
}

/// Connects with unlimited reconnects; `connected` follows the connection state.
///
/// The first attempt does not retry, so that a refusal no retry can fix (wrong credentials, a
/// failed TLS handshake) stops the start with a clear error. When NATS is merely unreachable,
/// a client that keeps retrying in the background is returned.
async fn connect(
    config: &BrokerConfig,
    name: &str,
    connected: watch::Sender<bool>,
) -> Result<async_nats::Client, BrokerError> {
    let urls = config.resolved_nats_urls();
    let failed = |message: String| BrokerError::Nats {
        urls: urls.join(","),
        message,
    };
    let connected = Arc::new(connected);
    match connect_options(config, name, &connected)
        .await?
        .connect(urls.as_slice())
        .await
    {
        Ok(client) => return Ok(client),
        Err(e) => match crate::security::refusal_reason(&e) {
            Some(reason) => return Err(failed(reason)),
            None => tracing::debug!(error = %e, "first NATS connection attempt failed; retrying"),
        },
    }
    connect_options(config, name, &connected)
        .await?
        .retry_on_initial_connect()
        .connect(urls.as_slice())
        .await
        .map_err(|e| failed(e.to_string()))
}

/// The broker's NATS connection options, with its credentials and TLS settings.
async fn connect_options(
    config: &BrokerConfig,
    name: &str,
    connected: &Arc<watch::Sender<bool>>,
) -> Result<ConnectOptions, BrokerError> {
    let max_delay = Duration::from_millis(config.nats_reconnect_max_delay_ms);
    let connected = Arc::clone(connected);
    let options = ConnectOptions::new()
        .name(name)
        // A server that stops answering (frozen, or a network that drops everything) is
        // noticed after two missed pings: the broker turns NOT_SERVING within seconds.
        .ping_interval(NATS_PING_INTERVAL)
        .max_reconnects(None)
        .connection_timeout(Duration::from_millis(config.nats_connect_timeout_ms))
        .reconnect_delay_callback(move |attempts| {
            let exponent = u32::try_from(attempts.min(16)).unwrap_or(16);
            FIRST_RECONNECT_DELAY
                .saturating_mul(2u32.saturating_pow(exponent))
                .min(max_delay)
        })
        .event_callback(move |event| {
            let connected = Arc::clone(&connected);
            async move {
                match event {
                    Event::Connected => {
                        tracing::info!("connected to NATS");
                        connected.send_replace(true);
                    }
                    Event::Disconnected => {
                        tracing::warn!("lost the NATS connection; reconnecting");
                        connected.send_replace(false);
                    }
                    // Only a drain (the broker shutting down) closes the client for good.
                    Event::Closed => {
                        tracing::info!("NATS connection closed");
                        connected.send_replace(false);
                    }
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            }
        });
    crate::security::apply_nats_security(options, config).await
}

/// Keeps the health status and the connection gauge in step with the NATS connections
/// (SERVING while all of them are up).
async fn follow_connection(
    mut connected: [watch::Receiver<bool>; 2],
    reporter: HealthReporter,
    metrics: BrokerMetrics,
    shutdown: CancellationToken,
) {
    loop {
        let up = connected.iter_mut().all(|c| *c.borrow_and_update());
        metrics.set_connected(up);
        let status = if up {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for service in HEALTH_SERVICES {
            reporter.set_service_status(service, status).await;
        }
        let [publish, consume] = &mut connected;
        tokio::select! {
            changed = publish.changed() => if changed.is_err() { return },
            changed = consume.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => {
                for service in HEALTH_SERVICES {
                    reporter.set_service_status(service, ServingStatus::NotServing).await;
                }
                return;
            }
        }
    }
}

/// A started broker.
#[derive(Debug)]
pub struct RunningBroker {
    grpc_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    metrics: BrokerMetrics,
    /// The publishing and the consuming connection.
    clients: [async_nats::Client; 2],
    shutdown: CancellationToken,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    metrics_task: Option<JoinHandle<()>>,
    health_task: JoinHandle<()>,
    shutdown_timeout: Duration,
}

impl RunningBroker {
    /// The address the gRPC server is bound to (the real port when 0 was asked for).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The address of the `/metrics` endpoint, unless it is off.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The broker's figures (also served on `/metrics`).
    pub fn metrics(&self) -> &BrokerMetrics {
        &self.metrics
    }

    /// Runs until `signal` completes (e.g. Ctrl-C or SIGTERM), then shuts down gracefully.
    ///
    /// # Errors
    ///
    /// As [`Self::shutdown`]; also when the gRPC server fails before the signal.
    pub async fn run_until<F: Future<Output = ()>>(mut self, signal: F) -> Result<(), BrokerError> {
        tokio::select! {
            () = signal => self.shutdown().await,
            served = &mut self.grpc => {
                self.shutdown.cancel();
                match served {
                    Ok(Ok(())) => Err(BrokerError::Serve("the gRPC server stopped unexpectedly".into())),
                    Ok(Err(e)) => Err(BrokerError::Serve(e.to_string())),
                    Err(e) => Err(BrokerError::Serve(e.to_string())),
                }
            }
        }
    }

    /// Stops gracefully: stops accepting calls, lets every in-flight publish finish or fail
    /// with an answer (StreamPublish calls answer what they sent, then end with UNAVAILABLE),
    /// flushes NATS and closes. Waits at most the configured shutdown timeout for the calls.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Serve`] when the gRPC server failed or did not stop in time.
    pub async fn shutdown(self) -> Result<(), BrokerError> {
        tracing::info!("LAX broker shutting down");
        self.shutdown.cancel();
        let served = tokio::time::timeout(self.shutdown_timeout, self.grpc).await;
        if let Some(task) = self.metrics_task
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "metrics endpoint task failed");
        }
        if let Err(e) = self.health_task.await {
            tracing::warn!(error = %e, "health task failed");
        }
        // Flushing waits for a connection; while NATS is down there is nothing to flush.
        for client in &self.clients {
            if client.connection_state() == async_nats::connection::State::Connected {
                match tokio::time::timeout(FLUSH_TIMEOUT, client.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "could not flush NATS"),
                    Err(_) => {
                        tracing::warn!(timeout = ?FLUSH_TIMEOUT, "NATS flush did not finish");
                    }
                }
            }
        }
        match served {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(BrokerError::Serve(e.to_string())),
            Ok(Err(e)) => Err(BrokerError::Serve(e.to_string())),
            Err(_) => Err(BrokerError::Serve(format!(
                "calls still running after {:?}; closed anyway",
                self.shutdown_timeout
            ))),
        }
    }
}
