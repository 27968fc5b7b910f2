//! Publishing: put one copy of each envelope (or raw message) into every queue bound to the
//! topic whose filter takes it, waiting while a queue is full.

use std::sync::Arc;

use bytes::Bytes;
use tidings_core::{Envelope, Result};

use crate::error;
use crate::topology::Hub;
use crate::wire::{Body, RawMessage};

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
                binding.queue.push(Body::Envelope(envelope.clone())).await?;
            }
        }
    }
    Ok(())
}

/// Put a raw message into every queue bound to `topic` that takes its `ce_type` (every
/// queue when it has none), without the size limit: it stands for what another client
/// put on the broker.
pub(crate) async fn inject_raw(
    hub: &Hub,
    topic: &str,
    headers: Vec<(String, String)>,
    payload: Bytes,
) -> Result<()> {
    let Some(bindings) = hub.bindings(topic) else {
        return Ok(());
    };
    let body = Body::Raw(Arc::new(RawMessage { headers, payload }));
    for binding in bindings.iter() {
        if binding.filter.takes(&body) {
            binding.queue.push(body.clone()).await?;
        }
    }
    Ok(())
}
