//! Thin typed calls to the JetStream API (`$JS.API.*`), with JetStream's own errors kept
//! whole so they map onto gRPC codes in one place ([`crate::error::status_for_api`]).

use std::{collections::HashMap, time::Duration};

use async_nats::jetstream::{
    self, consumer, context::RequestErrorKind, response::Response, stream,
};
use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::ApiError;

/// JetStream answers list requests in pages of at most this many entries.
pub(crate) const API_PAGE_LIMIT: usize = 256;

/// One page of `STREAM.LIST`.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamPage {
    pub(crate) total: usize,
    #[serde(default)]
    pub(crate) streams: Option<Vec<stream::Info>>,
    /// Streams whose leader did not answer in time (in a cluster, during an election): left
    /// out of `streams` although they exist.
    #[serde(default)]
    pub(crate) missing: Option<Vec<String>>,
}

/// One page of `STREAM.NAMES`, answered from the meta leader's assignments, so it lists a
/// stream whose own leader is being elected.
#[derive(Debug, Deserialize)]
struct StreamNamePage {
    #[serde(default)]
    streams: Option<Vec<String>>,
}

/// One page of `CONSUMER.LIST`.
#[derive(Debug, Deserialize)]
struct ConsumerPage {
    total: usize,
    #[serde(default)]
    consumers: Option<Vec<consumer::Info>>,
}

#[derive(Debug, Serialize)]
struct ListRequest<'a> {
    offset: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
struct SubjectsInfo {
    state: SubjectsState,
}

#[derive(Debug, Deserialize)]
struct SubjectsState {
    #[serde(default)]
    subjects: Option<HashMap<String, u64>>,
}

#[derive(Debug, Serialize)]
struct CreateConsumer<'a> {
    stream_name: &'a str,
    config: &'a consumer::Config,
    action: &'static str,
}

/// The JetStream API (default `$JS.API` prefix) over one connection.
#[derive(Debug, Clone)]
pub(crate) struct JsApi {
    client: async_nats::Client,
    timeout: Duration,
}

impl JsApi {
    pub(crate) fn new(client: async_nats::Client, timeout: Duration) -> Self {
        JsApi { client, timeout }
    }

    async fn call<T, P>(&self, subject: String, payload: &P) -> Result<T, ApiError>
    where
        T: DeserializeOwned,
        P: Serialize + ?Sized,
    {
        let body = serde_json::to_vec(payload)
            .map_err(|e| ApiError::Request(RequestErrorKind::Other, e.to_string()))?;
        self.call_raw(subject, Bytes::from(body)).await
    }

    /// Some requests (e.g. `CONSUMER.INFO`) must have an empty body, not even `null`.
    async fn call_empty<T: DeserializeOwned>(&self, subject: String) -> Result<T, ApiError> {
        self.call_raw(subject, Bytes::new()).await
    }

    async fn call_raw<T: DeserializeOwned>(
        &self,
        subject: String,
        body: Bytes,
    ) -> Result<T, ApiError> {
        let request = async_nats::Request::new()
            .payload(body)
            .timeout(Some(self.timeout));
        let message = self
            .client
            .send_request(format!("$JS.API.{subject}"), request)
            .await
            .map_err(|e| {
                let e = jetstream::context::RequestError::from(e);
                ApiError::Request(e.kind(), e.to_string())
            })?;
        let response: Response<T> = serde_json::from_slice(&message.payload).map_err(|e| {
            ApiError::Request(
                RequestErrorKind::Other,
                format!("unreadable JetStream answer: {e}"),
            )
        })?;
        match response {
            Response::Ok(value) => Ok(value),
            Response::Err { error } => Err(ApiError::JetStream(error)),
        }
    }

    /// One page of streams from `offset`, only those capturing `subject` when given.
    pub(crate) async fn stream_page(
        &self,
        offset: usize,
        subject: Option<&str>,
    ) -> Result<StreamPage, ApiError> {
        self.call("STREAM.LIST".to_owned(), &ListRequest { offset, subject })
            .await
    }

    /// Names of the streams capturing `subject`, from the meta leader alone (the first page,
    /// which is plenty: at most one stream captures a subject).
    pub(crate) async fn stream_names(&self, subject: &str) -> Result<Vec<String>, ApiError> {
        let page: StreamNamePage = self
            .call(
                "STREAM.NAMES".to_owned(),
                &ListRequest {
                    offset: 0,
                    subject: Some(subject),
                },
            )
            .await?;
        Ok(page.streams.unwrap_or_default())
    }

    pub(crate) async fn create_stream(
        &self,
        config: &stream::Config,
    ) -> Result<stream::Info, ApiError> {
        self.call(format!("STREAM.CREATE.{}", config.name), config)
            .await
    }

    pub(crate) async fn update_stream(
        &self,
        config: &stream::Config,
    ) -> Result<stream::Info, ApiError> {
        self.call(format!("STREAM.UPDATE.{}", config.name), config)
            .await
    }

    pub(crate) async fn delete_stream(&self, name: &str) -> Result<bool, ApiError> {
        let status: stream::DeleteStatus = self.call_empty(format!("STREAM.DELETE.{name}")).await?;
        Ok(status.success)
    }

    pub(crate) async fn stream_info(&self, name: &str) -> Result<stream::Info, ApiError> {
        self.call_empty(format!("STREAM.INFO.{name}")).await
    }

    /// Messages held per subject (the first page JetStream returns).
    pub(crate) async fn stream_subjects(
        &self,
        name: &str,
    ) -> Result<HashMap<String, u64>, ApiError> {
        #[derive(Serialize)]
        struct Filter {
            subjects_filter: &'static str,
        }
        let info: SubjectsInfo = self
            .call(
                format!("STREAM.INFO.{name}"),
                &Filter {
                    subjects_filter: ">",
                },
            )
            .await?;
        Ok(info.state.subjects.unwrap_or_default())
    }

    /// Every consumer of a stream.
    pub(crate) async fn consumers(&self, stream: &str) -> Result<Vec<consumer::Info>, ApiError> {
        let mut all = Vec::new();
        loop {
            let page: ConsumerPage = self
                .call(
                    format!("CONSUMER.LIST.{stream}"),
                    &ListRequest {
                        offset: all.len(),
                        subject: None,
                    },
                )
                .await?;
            let batch = page.consumers.unwrap_or_default();
            let done = batch.is_empty();
            all.extend(batch);
            if done || all.len() >= page.total {
                return Ok(all);
            }
        }
    }

    pub(crate) async fn consumer_info(
        &self,
        stream: &str,
        name: &str,
    ) -> Result<consumer::Info, ApiError> {
        self.call_empty(format!("CONSUMER.INFO.{stream}.{name}"))
            .await
    }

    /// Creates a consumer named by its durable name (or, for an ephemeral one, its name);
    /// JetStream refuses when one of that name exists with a different configuration.
    pub(crate) async fn create_consumer(
        &self,
        stream: &str,
        config: &consumer::Config,
    ) -> Result<consumer::Info, ApiError> {
        let name = config
            .durable_name
            .as_deref()
            .or(config.name.as_deref())
            .unwrap_or_default();
        self.call(
            format!("CONSUMER.CREATE.{stream}.{name}"),
            &CreateConsumer {
                stream_name: stream,
                config,
                action: "create",
            },
        )
        .await
    }
}
