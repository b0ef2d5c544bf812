//! A blocking wrapper for code that is not async (the Python SDK's `publish_sync`).

use lax_core::{Error, Receipt, SmolStr};

use crate::{
    client::{BatchMessage, BatchResult, LaxClient, PublishOptions},
    options::ClientOptions,
    payload::Payload,
};

/// A [`LaxClient`] driven by a runtime of its own, for synchronous code.
///
/// Do not use it from inside an async runtime (blocking there panics in tokio); use
/// [`LaxClient`] there.
///
/// ```no_run
/// use lax_client::{ClientOptions, blocking::BlockingClient};
///
/// let client = BlockingClient::connect(ClientOptions::default())?;
/// let receipt = client.publish_sync("events.cli", "hello")?;
/// println!("{}", receipt.message_id);
/// client.close()?;
/// # Ok::<(), lax_client::Error>(())
/// ```
#[derive(Debug)]
pub struct BlockingClient {
    client: LaxClient,
    runtime: tokio::runtime::Runtime,
}

impl BlockingClient {
    /// Starts a runtime and connects a client on it.
    pub fn connect(options: ClientOptions) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lax-client")
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("cannot start a runtime: {e}")).with_source(e))?;
        let client = runtime.block_on(LaxClient::connect(options))?;
        Ok(BlockingClient { client, runtime })
    }

    /// Publishes with default options, blocking until done.
    pub fn publish_sync(
        &self,
        subject: impl Into<SmolStr>,
        data: impl Payload,
    ) -> Result<Receipt, Error> {
        self.runtime.block_on(self.client.publish(subject, data))
    }

    /// Publishes with `options`, blocking until done.
    pub fn publish_with_sync(
        &self,
        subject: impl Into<SmolStr>,
        data: impl Payload,
        options: PublishOptions,
    ) -> Result<Receipt, Error> {
        self.runtime
            .block_on(self.client.publish_with(subject, data, options))
    }

    /// Publishes a batch, blocking until every message is done.
    pub fn batch_publish_sync(
        &self,
        messages: impl IntoIterator<Item = BatchMessage>,
    ) -> BatchResult {
        self.runtime.block_on(self.client.batch_publish(messages))
    }

    /// The async client, to hand to async code that runs on this client's runtime.
    pub fn client(&self) -> &LaxClient {
        &self.client
    }

    /// Drains and closes the client, then stops the runtime.
    pub fn close(self) -> Result<(), Error> {
        let result = self.runtime.block_on(self.client.close());
        self.runtime.shutdown_background();
        result
    }
}
