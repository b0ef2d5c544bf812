//! `broker.v1.StreamManager`: create, inspect, change, delete and list JetStream streams.

pub(crate) mod convert;

use std::sync::Arc;

use lax_core::{Limits, validate::validate_filter_subject};
use lax_proto::broker::v1::{self as pb, stream_manager_server::StreamManager};
use tonic::{Request, Response, Status};

use crate::{
    error::status_for_api,
    jsapi::{API_PAGE_LIMIT, JsApi},
    metrics::BrokerMetrics,
    names::validate_name,
    routing::StreamRouter,
    security::grant_of,
};

/// The StreamManager implementation.
#[derive(Debug, Clone)]
pub(crate) struct StreamManagerImpl {
    api: JsApi,
    router: Arc<StreamRouter>,
    metrics: BrokerMetrics,
}

impl StreamManagerImpl {
    pub(crate) fn new(api: JsApi, router: Arc<StreamRouter>, metrics: BrokerMetrics) -> Self {
        StreamManagerImpl {
            api,
            router,
            metrics,
        }
    }

    fn replicated_replicas(&self) -> usize {
        self.router.replicated_replicas()
    }

    async fn create(&self, request: pb::CreateStreamRequest) -> Result<pb::Stream, Status> {
        let config = convert::to_jetstream(
            &request.name,
            &request.config.unwrap_or_default(),
            self.replicated_replicas(),
        )?;
        let info = self.api.create_stream(&config).await.map_err(|e| {
            status_for_api(
                &format!(
                    "creating stream {} with {} replica(s)",
                    config.name, config.num_replicas
                ),
                &e,
            )
        })?;
        // Subjects this stream now captures may have been cached as going elsewhere (or nowhere).
        self.router.forget_stream(&config.name);
        tracing::info!(stream = %config.name, "created stream");
        Ok(convert::stream_of(&info, self.replicated_replicas()))
    }

    async fn info(&self, request: pb::GetStreamInfoRequest) -> Result<pb::StreamInfo, Status> {
        validate_name("stream", &request.name)?;
        let what = format!("reading stream {}", request.name);
        let info = self
            .api
            .stream_info(&request.name)
            .await
            .map_err(|e| status_for_api(&what, &e))?;
        let consumers = if request.include_consumers {
            let consumers = self
                .api
                .consumers(&request.name)
                .await
                .map_err(|e| status_for_api(&what, &e))?;
            consumers.iter().map(convert::consumer_of).collect()
        } else {
            Vec::new()
        };
        let stats = if request.include_stats {
            let subjects = self
                .api
                .stream_subjects(&request.name)
                .await
                .map_err(|e| status_for_api(&what, &e))?;
            Some(convert::stats_of(&info.state, subjects))
        } else {
            None
        };
        Ok(pb::StreamInfo {
            config: Some(convert::stream_of(&info, self.replicated_replicas())),
            state: Some(convert::state_of(&info.state)),
            consumers,
            stats,
        })
    }

    async fn update(&self, request: pb::UpdateStreamRequest) -> Result<pb::Stream, Status> {
        let config = convert::to_jetstream(
            &request.name,
            &request.config.unwrap_or_default(),
            self.replicated_replicas(),
        )?;
        let result = self.api.update_stream(&config).await;
        self.router.forget_stream(&config.name);
        let info =
            result.map_err(|e| status_for_api(&format!("updating stream {}", config.name), &e))?;
        Ok(convert::stream_of(&info, self.replicated_replicas()))
    }

    async fn delete(
        &self,
        request: pb::DeleteStreamRequest,
    ) -> Result<pb::DeleteStreamResponse, Status> {
        validate_name("stream", &request.name)?;
        let result = self.api.delete_stream(&request.name).await;
        self.router.forget_stream(&request.name);
        let success =
            result.map_err(|e| status_for_api(&format!("deleting stream {}", request.name), &e))?;
        Ok(pb::DeleteStreamResponse {
            success,
            message: if success {
                format!("stream {} deleted", request.name)
            } else {
                format!("JetStream did not delete stream {}", request.name)
            },
        })
    }

    async fn list(
        &self,
        request: pb::ListStreamsRequest,
    ) -> Result<pb::ListStreamsResponse, Status> {
        let filter =
            (!request.subject_filter.is_empty()).then_some(request.subject_filter.as_str());
        if let Some(filter) = filter {
            validate_filter_subject(filter, Limits::DEFAULT_MAX_SUBJECT_LEN)
                .map_err(|e| Status::invalid_argument(e.message().to_owned()))?;
        }
        let offset = usize::try_from(request.offset).map_err(|_| {
            Status::invalid_argument(format!(
                "offset is {}; it must not be negative",
                request.offset
            ))
        })?;
        let limit = match usize::try_from(request.limit) {
            Ok(0) => API_PAGE_LIMIT,
            Ok(limit) => limit,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "limit is {}; it must not be negative (0 means {API_PAGE_LIMIT})",
                    request.limit
                )));
            }
        };
        let mut streams = Vec::new();
        let mut total = 0;
        while streams.len() < limit {
            let page = self
                .api
                .stream_page(offset + streams.len(), filter)
                .await
                .map_err(|e| status_for_api("listing streams", &e))?;
            total = page.total;
            let batch = page.streams.unwrap_or_default();
            if batch.is_empty() {
                break;
            }
            let rr = self.replicated_replicas();
            streams.extend(
                batch
                    .iter()
                    .take(limit - streams.len())
                    .map(|info| convert::stream_of(info, rr)),
            );
            if offset + streams.len() >= total {
                break;
            }
        }
        let to_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        Ok(pb::ListStreamsResponse {
            streams,
            total: to_i32(total),
            offset: request.offset,
            limit: to_i32(limit),
        })
    }
}

#[tonic::async_trait]
impl StreamManager for StreamManagerImpl {
    async fn create_stream(
        &self,
        request: Request<pb::CreateStreamRequest>,
    ) -> Result<Response<pb::Stream>, Status> {
        let result = match grant_of(&request).and_then(|g| g.check_admin("create streams")) {
            Ok(()) => self.create(request.into_inner()).await,
            Err(denied) => Err(denied),
        };
        self.metrics.answered("CreateStream", result)
    }

    async fn get_stream_info(
        &self,
        request: Request<pb::GetStreamInfoRequest>,
    ) -> Result<Response<pb::StreamInfo>, Status> {
        self.metrics
            .answered("GetStreamInfo", self.info(request.into_inner()).await)
    }

    async fn update_stream(
        &self,
        request: Request<pb::UpdateStreamRequest>,
    ) -> Result<Response<pb::Stream>, Status> {
        let result = match grant_of(&request).and_then(|g| g.check_admin("update streams")) {
            Ok(()) => self.update(request.into_inner()).await,
            Err(denied) => Err(denied),
        };
        self.metrics.answered("UpdateStream", result)
    }

    async fn delete_stream(
        &self,
        request: Request<pb::DeleteStreamRequest>,
    ) -> Result<Response<pb::DeleteStreamResponse>, Status> {
        let result = match grant_of(&request).and_then(|g| g.check_admin("delete streams")) {
            Ok(()) => self.delete(request.into_inner()).await,
            Err(denied) => Err(denied),
        };
        self.metrics.answered("DeleteStream", result)
    }

    async fn list_streams(
        &self,
        request: Request<pb::ListStreamsRequest>,
    ) -> Result<Response<pb::ListStreamsResponse>, Status> {
        self.metrics
            .answered("ListStreams", self.list(request.into_inner()).await)
    }
}
