//! `tidings dead-letters list|show|replay|purge`: the dead letters of one subscription,
//! through the transport SPI (`dead_letters`, `dead_letter`, `replay_dead_letters`,
//! `purge_dead_letters`).

use std::io::{BufRead, IsTerminal, Write};

use serde_json::{json, Value};
use tidings_core::transport::{DynTransport, SubscriptionSpec};
use tidings_core::{DeadLetter, Replay};
use uuid::Uuid;

use crate::broker::{self, BrokerArgs};
use crate::Failure;

/// Which subscription's dead letters.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Target {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The service that owns the subscription.
    #[arg(long, value_name = "NAME")]
    service: String,
    /// The subscription's broker name (default: the service's name, as `Subscription::to`
    /// names it; with a bus namespace, `<namespace>.<name>`).
    #[arg(long, value_name = "NAME")]
    subscription: Option<String>,
    /// The topic's broker name (with a bus namespace, `<namespace>.<topic>`).
    #[arg(long, value_name = "TOPIC")]
    topic: String,
}

/// Which dead letters `replay` and `purge` take.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Selection {
    /// Every dead letter of the subscription.
    #[arg(long, conflicts_with_all = ["id", "reason"])]
    all: bool,
    /// Only this envelope id (repeatable).
    #[arg(long, value_name = "ID")]
    id: Vec<Uuid>,
    /// Only the dead letters whose reason contains this text.
    #[arg(long, value_name = "TEXT", conflicts_with = "id")]
    reason: Option<String>,
}

/// The `dead-letters` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum DeadLetters {
    /// List the dead letters, oldest first: id, time, attempts, event and reason.
    List {
        #[command(flatten)]
        target: Target,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line instead.
        #[arg(long)]
        json: bool,
    },
    /// One dead letter (by envelope id) as JSON, its payload decoded.
    Show {
        #[command(flatten)]
        target: Target,
        /// The envelope id.
        id: Uuid,
    },
    /// Send dead letters back to the subscription (after fixing what made them fail).
    Replay {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        which: Selection,
    },
    /// Delete dead letters for good; asks first unless --yes.
    Purge {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        which: Selection,
        /// Do not ask (scripts); without it, a purge outside a terminal is refused.
        #[arg(long)]
        yes: bool,
    },
}

impl Target {
    fn spec(&self) -> SubscriptionSpec {
        let name = self
            .subscription
            .clone()
            .unwrap_or_else(|| self.service.clone());
        SubscriptionSpec::new(&self.service, name, &self.topic, Vec::new())
    }

    fn describe(&self) -> String {
        let spec = self.spec();
        format!("subscription `{}` of topic `{}`", spec.name, spec.topic)
    }
}

/// Run a `dead-letters` subcommand; what it prints.
pub(crate) fn run(command: DeadLetters) -> Result<String, Failure> {
    let runtime = broker::runtime()?;
    runtime.block_on(async move {
        match command {
            DeadLetters::List {
                target,
                limit,
                json,
            } => {
                let transport = broker::transport(&target.broker.transport)?;
                let letters = transport
                    .dead_letters_dyn(&target.spec(), limit)
                    .await
                    .map_err(broker::failed(format_args!(
                        "listing the dead letters of the {}",
                        target.describe()
                    )))?;
                Ok(list(&letters, json))
            }
            DeadLetters::Show { target, id } => {
                let transport = broker::transport(&target.broker.transport)?;
                let found = transport
                    .dead_letter_dyn(&target.spec(), id)
                    .await
                    .map_err(broker::failed(format_args!(
                        "looking up dead letter {id} of the {}",
                        target.describe()
                    )))?;
                match found {
                    Some(letter) => Ok(format!(
                        "{}\n",
                        serde_json::to_string_pretty(&shown(&letter)).expect("JSON")
                    )),
                    None => Err(format!(
                        "no dead letter {id} in the {} (list them with `tidings dead-letters list`)",
                        target.describe()
                    )
                    .into()),
                }
            }
            DeadLetters::Replay { target, which } => {
                let transport = broker::transport(&target.broker.transport)?;
                let spec = target.spec();
                let selected = select(&*transport, &target, &which).await?;
                let n = transport
                    .replay_dead_letters_dyn(&spec, &selected)
                    .await
                    .map_err(broker::failed(format_args!(
                        "replaying the dead letters of the {}",
                        target.describe()
                    )))?;
                Ok(format!("replayed {n} dead letters\n"))
            }
            DeadLetters::Purge {
                target,
                which,
                yes,
            } => purge(target, which, yes).await,
        }
    })
}

/// What `which` selects, as a [`Replay`]; `--reason` lists the dead letters and picks the
/// ids whose reason matches.
async fn select(
    transport: &dyn DynTransport,
    target: &Target,
    which: &Selection,
) -> Result<Replay, Failure> {
    if which.all {
        return Ok(Replay::All);
    }
    if !which.id.is_empty() {
        return Ok(Replay::Ids(which.id.clone()));
    }
    let Some(reason) = &which.reason else {
        return Err(
            "say which dead letters: --all, --id <ID> (repeatable) or --reason <TEXT>".into(),
        );
    };
    let letters = transport
        .dead_letters_dyn(&target.spec(), usize::MAX)
        .await
        .map_err(broker::failed(format_args!(
            "listing the dead letters of the {}",
            target.describe()
        )))?;
    Ok(Replay::Ids(
        letters
            .iter()
            .filter(|d| d.info.reason.contains(reason.as_str()))
            .map(|d| d.envelope.id)
            .collect(),
    ))
}

/// Purge: list what is selected, confirm, and delete exactly those ids (a dead letter
/// parked after the confirmation is not deleted).
async fn purge(target: Target, which: Selection, yes: bool) -> Result<String, Failure> {
    let transport = broker::transport(&target.broker.transport)?;
    let spec = target.spec();
    let selected = select(&*transport, &target, &which).await?;
    let letters = transport
        .dead_letters_dyn(&spec, usize::MAX)
        .await
        .map_err(broker::failed(format_args!(
            "listing the dead letters of the {}",
            target.describe()
        )))?;
    let ids: Vec<Uuid> = letters
        .iter()
        .map(|d| d.envelope.id)
        .filter(|id| selected.selects(id))
        .collect();
    if ids.is_empty() {
        return Ok("purged 0 dead letters (none selected)\n".into());
    }
    if !yes {
        let question = format!(
            "Delete {} dead letters of the {} for good? [y/N] ",
            ids.len(),
            target.describe()
        );
        if !confirm(&question)? {
            return Err("purge cancelled: nothing was deleted".into());
        }
    }
    let n = transport
        .purge_dead_letters_dyn(&spec, &Replay::Ids(ids))
        .await
        .map_err(broker::failed(format_args!(
            "purging the dead letters of the {}",
            target.describe()
        )))?;
    Ok(format!("purged {n} dead letters\n"))
}

/// Ask `question` on the terminal; refuses outside one.
fn confirm(question: &str) -> Result<bool, Failure> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(
            "purge deletes dead letters for good and asks first, but stdin is not a terminal: pass --yes to confirm".into(),
        );
    }
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure(format!("cannot read the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// One line per dead letter, or one JSON object per line.
fn list(letters: &[DeadLetter], json: bool) -> String {
    let mut out = String::new();
    for d in letters {
        if json {
            out.push_str(&summary(d).to_string());
        } else {
            out.push_str(&format!(
                "{}  {}  attempts={}  {} v{}  {}",
                d.envelope.id,
                broker::time(d.info.time),
                d.info.attempts,
                d.envelope.event_type,
                d.envelope.version,
                d.info.reason.replace('\n', " "),
            ));
        }
        out.push('\n');
    }
    out
}

/// A dead letter's details without its payload.
fn summary(d: &DeadLetter) -> Value {
    json!({
        "id": d.envelope.id.to_string(),
        "type": d.envelope.event_type,
        "version": d.envelope.version,
        "reason": d.info.reason,
        "attempts": d.info.attempts,
        "time": broker::time(d.info.time),
        "service": d.info.service.as_ref(),
        "subscription": d.info.subscription.as_ref(),
        "topic": d.info.topic.as_ref(),
    })
}

/// A dead letter with its attributes and payload decoded.
fn shown(d: &DeadLetter) -> Value {
    let mut value = summary(d);
    value["attributes"] = broker::attributes(&d.envelope);
    value["payload"] = broker::payload(&d.envelope);
    value
}
