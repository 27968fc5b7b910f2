//! Publishing: put one copy of each envelope into every queue bound to the topic whose
//! filter takes it, waiting while a queue is full.

use std::sync::Arc;

use tidings_core::{Envelope, Result};

use crate::error;
use crate::topology::Hub;

/// Publish `envelopes` to `topic` on `hub`; resolves once every copy is in its queue.
pub(crate) async fn publish(hub: &Hub, topic: &str, envelopes: Vec<Envelope>) -> Result<()> {
    let limit = hub.config.max_message_size;
    // Check every envelope before publishing any, so an oversized one publishes nothing.
    for env in &envelopes {
        let size = env.wire_size();
        if size > limit {
            return Err(error::too_large(&env.event_type, size, limit));
        }
    }
    let Some(bindings) = hub.bindings(topic) else {
        // Nobody subscribes to the topic: like a broker exchange without bindings.
        return Ok(());
    };
    for envelope in envelopes {
        let envelope = Arc::new(envelope);
        for binding in bindings.iter() {
            if binding.filter.matches(&envelope.event_type) {
                binding.queue.push(envelope.clone()).await?;
            }
        }
    }
    Ok(())
}
