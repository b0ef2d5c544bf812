//! The blocking wrapper, from plain synchronous code.

mod common;

use common::Env;
use lax_client::{PublishOptions, Route, blocking::BlockingClient};

#[test]
fn publish_sync_works_from_synchronous_code() {
    // The servers live on a runtime of their own; the test thread itself is synchronous.
    let servers = tokio::runtime::Runtime::new().unwrap();
    let env = servers.block_on(Env::start());
    let client = BlockingClient::connect(env.options()).unwrap();

    let direct = client.publish_sync("sync.events", "hello").unwrap();
    assert_eq!(direct.route, Route::Direct);
    let stored = client
        .publish_with_sync("sync.orders", "order", PublishOptions::persistent())
        .unwrap();
    assert_eq!(stored.ack.unwrap().stream, "SYNC");
    assert_eq!(servers.block_on(env.count("SYNC")), 1);

    client.close().unwrap();
}
