//! `tidings publish <wire-name> --json '{..}' --service S`: an operator's one-off event,
//! checked against the JSON Schema the service's catalog has for it, encoded with the
//! service's codec and published to the topic's broker name.

use tidings_core::catalog::{EventContract, PublishedTopic, ServiceCatalog};
use tidings_core::{Codec, Envelope};

use crate::broker::{self, BrokerArgs};
use crate::workspace::Workspace;
use crate::Failure;

/// The options of `tidings publish`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Publish {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The event's wire name (`lending.book-borrowed`).
    wire_name: String,
    /// The payload, as JSON; checked against the event's schema in the catalog.
    #[arg(long, value_name = "JSON")]
    json: String,
    /// The publishing service: its catalog says the topic, the version and the codec, and
    /// it is the envelope's source.
    #[arg(long, value_name = "NAME")]
    service: String,
    /// An ordering key (Kafka record key, the memory and RabbitMQ lane).
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
}

/// Check, encode and publish; prints the envelope id.
pub(crate) fn run(ws: &Workspace, args: Publish) -> Result<String, Failure> {
    let (catalog, topic, contract) = find(ws, &args.service, &args.wire_name)?;
    let value: serde_json::Value = serde_json::from_str(&args.json).map_err(|e| {
        Failure(format!(
            "--json is not valid JSON ({e}); quote it for the shell, e.g. --json '{{\"id\": 1}}'"
        ))
    })?;
    check(contract, &value)?;
    let codec = Codec::for_content_type(&catalog.codec).ok_or_else(|| {
        Failure(format!(
            "service `{}` publishes as {:?}, which this command cannot encode",
            catalog.service, catalog.codec
        ))
    })?;
    let payload = codec
        .encode(&value)
        .map_err(broker::failed("encoding the payload"))?;
    let mut envelope = Envelope::new(
        contract.name.clone(),
        contract.version,
        catalog.service.as_str(),
        codec.content_type(),
        payload,
    );
    envelope.ordering_key = args.key.clone();
    let id = envelope.id;
    let transport = broker::transport(&args.broker.transport)?;
    broker::runtime()?.block_on(async {
        transport
            .publish_dyn(&topic.broker_topic, vec![envelope])
            .await
            .map_err(broker::failed(format_args!(
                "publishing {} to topic `{}`",
                contract.name, topic.broker_topic
            )))
    })?;
    Ok(format!("{id}\n"))
}

/// The service's catalog, the topic and the contract of `wire_name` it publishes.
fn find<'a>(
    ws: &'a Workspace,
    service: &str,
    wire_name: &str,
) -> Result<(&'a ServiceCatalog, &'a PublishedTopic, &'a EventContract), Failure> {
    let Some(catalog) = ws.catalogs.iter().find(|c| c.service == service) else {
        let known: Vec<&str> = ws.catalogs.iter().map(|c| c.service.as_str()).collect();
        return Err(format!(
            "no catalog for service `{service}`; the catalogs are of: {}",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        )
        .into());
    };
    for topic in &catalog.publishes {
        if let Some(contract) = topic.events.iter().find(|e| e.name == wire_name) {
            return Ok((catalog, topic, contract));
        }
    }
    let published: Vec<&str> = catalog
        .publishes
        .iter()
        .flat_map(|t| t.events.iter().map(|e| e.name.as_str()))
        .collect();
    Err(format!(
        "service `{service}` does not publish `{wire_name}`; it publishes: {}",
        if published.is_empty() {
            "nothing".into()
        } else {
            published.join(", ")
        }
    )
    .into())
}

/// Refuse `value` unless it is valid against the contract's schema, naming the first
/// problem and where it is.
fn check(contract: &EventContract, value: &serde_json::Value) -> Result<(), Failure> {
    let Some(schema) = &contract.schema else {
        return Err(format!(
            "`{}` has no schema in the catalog, so its payload cannot be checked: derive schemars::JsonSchema on the event type and write the catalog again",
            contract.name
        )
        .into());
    };
    let validator = jsonschema::validator_for(schema).map_err(|e| {
        Failure(format!(
            "the catalog's schema of `{}` is not a valid JSON Schema: {e}",
            contract.name
        ))
    })?;
    if let Some(error) = validator.iter_errors(value).next() {
        let path = error.instance_path().to_string();
        let at = if path.is_empty() {
            "/".to_string()
        } else {
            path
        };
        return Err(format!(
            "the payload does not match the schema of `{}` v{}: at {at}: {error}",
            contract.name, contract.version
        )
        .into());
    }
    Ok(())
}
