//! The transport conformance suite against the in-memory transport: one `Memory` per
//! case, shared by every bus of the case (the services of one process). Raw messages are
//! put into the hub with `Memory::inject_raw`, as another client would put them on a
//! broker; the memory transport has no connection to drop.

use std::sync::Arc;

use futures::future::BoxFuture;
use tidings_core::Result;
use tidings_memory::Memory;
use tidings_testing::conformance::{Adversary, Factory, RawMessage};

struct MemoryAdversary(Memory);

impl Adversary for MemoryAdversary {
    fn inject(&self, topic: &str, message: RawMessage) -> BoxFuture<'static, Result<()>> {
        let memory = self.0.clone();
        let topic = topic.to_string();
        Box::pin(async move {
            memory
                .inject_raw(&topic, message.headers, message.payload)
                .await
        })
    }

    /// Nothing to drop: the hub lives in the process. The case still checks that
    /// publishing and consuming go on around the call.
    fn drop_connections(&self) -> BoxFuture<'static, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

fn factory() -> Factory {
    let memory = Memory::new();
    Factory::shared("memory", Arc::new(memory.clone())).adversary(Arc::new(MemoryAdversary(memory)))
}

tidings_testing::conformance_suite!(factory());
