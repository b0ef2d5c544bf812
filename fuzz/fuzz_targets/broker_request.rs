//! The broker's proto → request mapping (`lax_broker::input`): the first byte picks a
//! `broker.v1` message, the rest is decoded with prost (inputs that do not decode are
//! skipped) and run through the broker's real checks; see the oracle for the properties.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lax_proto::broker::v1 as pb;
use prost::Message as _;

#[path = "../../crates/lax-broker/tests/support/request_oracle.rs"]
mod oracle;

fuzz_target!(|input: &[u8]| {
    let Some((&kind, bytes)) = input.split_first() else {
        return;
    };
    match kind % 6 {
        0 => {
            if let Ok(request) = pb::PublishRequest::decode(bytes) {
                oracle::publish(request, None, lax_broker::input::DEFAULT_MAX_PAYLOAD);
            }
        }
        1 => {
            // A BatchPublish: its options stand in for each message's missing ones.
            if let Ok(batch) = pb::BatchPublishRequest::decode(bytes) {
                for request in batch.messages {
                    oracle::publish(request, batch.default_options.as_ref(), 64);
                }
            }
        }
        2 => {
            if let Ok(request) = pb::SubscribeRequest::decode(bytes) {
                oracle::subscribe(request);
            }
        }
        3 => {
            if let Ok(request) = pb::ConsumerGroupRequest::decode(bytes) {
                oracle::consumer_group(request);
            }
        }
        4 => {
            if let Ok(request) = pb::CreateStreamRequest::decode(bytes) {
                oracle::stream_config(&request.name, &request.config.unwrap_or_default(), 3);
            }
        }
        _ => {
            if let Ok(request) = pb::UpdateStreamRequest::decode(bytes) {
                oracle::stream_config(&request.name, &request.config.unwrap_or_default(), 1);
            }
        }
    }
});
