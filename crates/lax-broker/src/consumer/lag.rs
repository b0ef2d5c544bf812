//! The consumer groups' figures an operator watches (lag, unacknowledged, redelivered), read
//! from JetStream when `/metrics` is scraped, so they are current without the broker
//! polling in between — and they cover groups with no member connected, whose lag is the
//! one that grows.

use std::time::Duration;

use crate::{jsapi::JsApi, metrics::BrokerMetrics};

/// How long a scrape waits for JetStream before answering with the figures it has.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

/// Sets the consumer-group gauges from every durable consumer of every stream.
pub(crate) async fn refresh(api: &JsApi, metrics: &BrokerMetrics) {
    match tokio::time::timeout(REFRESH_TIMEOUT, groups(api)).await {
        Ok(Ok(groups)) => metrics.set_groups(groups),
        Ok(Err(error)) => {
            tracing::debug!(%error, "reading the consumer groups for /metrics failed")
        }
        Err(_) => {
            tracing::debug!(timeout = ?REFRESH_TIMEOUT, "reading the consumer groups for /metrics timed out")
        }
    }
}

/// Stream, group, and the group's pending, ack-pending and redelivered counts.
async fn groups(api: &JsApi) -> Result<Vec<(String, String, [u64; 3])>, crate::error::ApiError> {
    let mut streams = Vec::new();
    loop {
        let page = api.stream_page(streams.len(), None).await?;
        let batch = page.streams.unwrap_or_default();
        let done = batch.is_empty();
        streams.extend(batch.into_iter().map(|info| info.config.name));
        if done || streams.len() >= page.total {
            break;
        }
    }
    let mut groups = Vec::new();
    for stream in streams {
        for consumer in api.consumers(&stream).await? {
            let Some(group) = consumer.config.durable_name else {
                continue;
            };
            groups.push((
                stream.clone(),
                group,
                [
                    consumer.num_pending,
                    consumer.num_ack_pending as u64,
                    consumer.num_redelivered as u64,
                ],
            ));
        }
    }
    Ok(groups)
}
