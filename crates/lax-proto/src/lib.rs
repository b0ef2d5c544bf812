//! Generated protobuf messages and tonic services for the LAX `broker.v1` wire contract.
//!
//! The `.proto` sources live in the workspace's `proto/broker/v1/`. They keep every name, number
//! and type of the contract that existing LAX clients (among them the Python SDK
//! `lax-nats-client`) speak; fields numbered past the contract's are LAX additions, which old
//! clients ignore. The crate builds with no system `protoc`: `build.rs` compiles the sources
//! with [protox](https://docs.rs/protox), a pure-Rust protobuf compiler.
//!
//! ```
//! use lax_proto::broker::v1::{PublishOptions, PublishRequest};
//!
//! let request = PublishRequest {
//!     subject: "orders.created".into(),
//!     payload: b"{\"order_id\":\"456\"}".as_slice().into(),
//!     options: Some(PublishOptions {
//!         tier: "persistent".into(),
//!         require_ack: true,
//!         ..Default::default()
//!     }),
//!     ..Default::default()
//! };
//! assert_eq!(request.options.unwrap().tier, "persistent");
//! ```

/// Protobuf packages compiled from `proto/`.
pub mod broker {
    /// Package `broker.v1`: `BrokerService` and `StreamManager` with their messages.
    #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("broker.v1");
    }
}

/// The encoded `FileDescriptorSet` of `broker.v1` (and its imports), for gRPC server
/// reflection and for checking the compiled contract.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/broker_v1_descriptor.bin"));

/// The response metadata (trailer) key with which a broker marks a failed unary `Publish` as
/// a passing state of the JetStream cluster (a leader election): the status twin of the
/// `transient` field of `PublishAck` and `PublishResponse`.
pub const TRANSIENT_METADATA: &str = "lax-transient";
