//! Publishing: one envelope through the azure crate's `TopicSender::send_message`, several
//! as batch sends (`application/vnd.microsoft.servicebus.json`), which the azure crate
//! does not offer. Either resolves once Service Bus answered 201.

use std::collections::HashMap;

use azure_core::Method;
use azure_messaging_servicebus::service_bus::{
    SendMessageOptions, SettableBrokerProperties, TopicClient,
};
use bytes::Bytes;
use tidings_core::{Envelope, Result};

use crate::http::Rest;
use crate::wire::{self, Outgoing, Resend};

/// The most a batch request carries (the Standard tier takes 256 KiB per request).
const BATCH_BYTES: usize = 200 * 1024;

/// Send one message through the azure crate.
pub(crate) async fn send_one(rest: &Rest, topic: &str, out: Outgoing) -> Result<()> {
    let what = format!("sending to topic `{topic}`");
    let client = TopicClient::new(
        rest.http.clone(),
        rest.namespace.clone(),
        topic,
        rest.key_name.clone(),
        rest.key().to_string(),
    )
    .map_err(|e| crate::error::azure_error(e, &what, &rest.key_name))?;
    let options = SendMessageOptions {
        content_type: Some(out.content_type.clone()),
        broker_properties: Some(SettableBrokerProperties {
            message_id: Some(out.message_id.clone()),
            correlation_id: out.correlation_id.clone(),
            label: Some(out.label.clone()),
            to: out.to.clone(),
            scheduled_enqueue_time_utc: out.scheduled.map(time::OffsetDateTime::from),
            ..Default::default()
        }),
        custom_properties: Some(out.properties.iter().cloned().collect::<HashMap<_, _>>()),
    };
    // `send_message` checks the status (any 2xx is success; Service Bus answers 201).
    client
        .topic_sender()
        .send_message(&out.body, Some(options))
        .await
        .map_err(|e| crate::error::azure_error(e, &what, &rest.key_name))
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
        Method::Post,
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
