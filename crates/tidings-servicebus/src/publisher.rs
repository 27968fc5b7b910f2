//! Publishing: one envelope as a single send, several as batch sends
//! (`application/vnd.microsoft.servicebus.json`, which the azure crate does not offer).
//! Either resolves once Service Bus answered 201.

use bytes::Bytes;
use reqwest::Method;
use tidings_core::{Envelope, Result};

use crate::client::Rest;
use crate::wire::{self, Outgoing, Resend};

/// The most a batch request carries (the Standard tier takes 256 KiB per request).
const BATCH_BYTES: usize = 200 * 1024;

/// Send one message (`POST /{topic}/messages`, BrokerProperties and custom properties as
/// headers). Built here rather than through the azure crate's `send_message`, whose error
/// drops the answer's body: a refusal as too large (403 `MessageSizeExceeded`, or 413)
/// must come back as `MessageTooLarge`, and only the body says which 403 it is.
pub(crate) async fn send_one(rest: &Rest, topic: &str, out: Outgoing) -> Result<()> {
    let mut headers: Vec<(&str, String)> = Vec::with_capacity(out.properties.len() + 2);
    headers.push(("content-type", out.content_type.clone()));
    headers.push((
        "brokerproperties",
        serde_json::Value::Object(out.broker_properties()).to_string(),
    ));
    for (name, value) in &out.properties {
        headers.push((name.as_str(), value.clone()));
    }
    rest.expect(
        Method::POST,
        &format!("/{topic}/messages"),
        &headers,
        Some(Bytes::from(out.body)),
        &[201],
        &format!("sending to topic `{topic}`"),
    )
    .await?;
    Ok(())
}

/// Send messages as batches of at most [`BATCH_BYTES`].
pub(crate) async fn send_batch(rest: &Rest, topic: &str, messages: Vec<Outgoing>) -> Result<()> {
    let mut chunk: Vec<serde_json::Value> = Vec::new();
    let mut size = 0;
    let total = messages.len();
    for (i, m) in messages.into_iter().enumerate() {
        let item_size = m.size();
        if !chunk.is_empty() && size + item_size > BATCH_BYTES {
            post_batch(rest, topic, std::mem::take(&mut chunk)).await?;
            size = 0;
        }
        size += item_size;
        chunk.push(m.batch_item());
        if i + 1 == total {
            post_batch(rest, topic, std::mem::take(&mut chunk)).await?;
        }
    }
    Ok(())
}

async fn post_batch(rest: &Rest, topic: &str, items: Vec<serde_json::Value>) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let n = items.len();
    let body = Bytes::from(serde_json::Value::Array(items).to_string());
    rest.expect(
        Method::POST,
        &format!("/{topic}/messages"),
        &[(
            "content-type",
            "application/vnd.microsoft.servicebus.json".to_string(),
        )],
        Some(body),
        &[201],
        &format!("sending a batch of {n} to topic `{topic}`"),
    )
    .await?;
    Ok(())
}

/// Publish envelopes as they are.
pub(crate) async fn publish(rest: &Rest, topic: &str, envelopes: Vec<Envelope>) -> Result<()> {
    let mut out = envelopes
        .iter()
        .map(|e| wire::encode(e, Resend::default()))
        .collect::<Result<Vec<_>>>()?;
    match out.len() {
        0 => Ok(()),
        1 => send_one(rest, topic, out.pop().expect("one")).await,
        _ => send_batch(rest, topic, out).await,
    }
}
