//! `tidings`: the event catalog of a workspace of tidings services, from the catalog files
//! their buses write (`bus.catalog().write_to_dir(..)`) and the manifest `tidings.toml`.
//!
//! ```text
//! tidings list [--json] [--service NAME]   every event: wire name, version, topic, publisher, subscribers
//! tidings validate [--update]               the workspace rules; --update rewrites tidings.lock
//! tidings asyncapi [--output FILE]          an AsyncAPI 3.0 document
//! tidings graph [--format mermaid|dot]      the flow between services
//!
//! tidings tail <topic> --transport URL [--count N] [--timeout 10s] [--event NAME]
//! tidings dead-letters list|show|replay|purge --transport URL --service S [--subscription N] --topic T
//! tidings publish <wire-name> --json '{..}' --service S --transport URL
//! tidings dashboard --transport URL [--listen 127.0.0.1:8080] [--token T | --basic-auth U:P]
//! ```
//!
//! The broker commands take the transport URL (`--transport` or `TIDINGS_TRANSPORT`):
//! `amqp://`, `kafka://`, `servicebus://`; `memory://` is refused, since the memory hub
//! lives inside one process.
//!
//! Every command takes `--manifest FILE` (default `./tidings.toml` when there is one),
//! `--catalog DIR` (default: the manifest's `workspace.catalog`, else `catalog` beside it)
//! and `--lock FILE` (default: `workspace.lock`, else `tidings.lock` beside the manifest).
//! Errors are one line on stderr and exit status 2; `validate` exits 1 when it finds
//! errors.

mod asyncapi;
mod broker;
mod dashboard;
mod dead_letters;
mod graph;
mod list;
mod publish;
mod tail;
mod validate;
mod workspace;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use workspace::Workspace;

/// The event catalog of tidings services: list, validate, AsyncAPI and the flow picture.
#[derive(Debug, Parser)]
#[command(name = "tidings", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    files: Files,
    #[command(subcommand)]
    command: Command,
}

/// Where the workspace's files are.
#[derive(Debug, Clone, clap::Args)]
struct Files {
    /// The workspace manifest (default: ./tidings.toml when it exists).
    #[arg(long, global = true, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// The folder of catalog JSON files, one per service (default: the manifest's
    /// `workspace.catalog`, else `catalog` beside the manifest).
    #[arg(long, global = true, value_name = "DIR")]
    catalog: Option<PathBuf>,
    /// The lock file (default: the manifest's `workspace.lock`, else `tidings.lock` beside
    /// the manifest or the catalog folder).
    #[arg(long, global = true, value_name = "FILE")]
    lock: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every event with wire name, version, topic, publisher and subscribers.
    List {
        /// JSON instead of one line per event.
        #[arg(long)]
        json: bool,
        /// Only the events this service publishes or handles.
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
    },
    /// Check the workspace: definitions, handlers, publishers, versions and contract
    /// changes against tidings.lock. Exit status 1 on errors.
    Validate {
        /// Rewrite tidings.lock with the contracts as they are now (after the checks; the
        /// lock is written even when they find errors, which are still reported).
        #[arg(long)]
        update: bool,
    },
    /// An AsyncAPI 3.0 document: channels per topic, messages per event with payload
    /// schemas and CloudEvents headers, operations per publisher and subscription.
    Asyncapi {
        /// Write it to this file instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// The flow of events between services, as Mermaid or Graphviz DOT.
    Graph {
        /// The output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
    },
    /// Print a topic's events as they arrive, one JSON line each (attributes and payload),
    /// through a temporary subscription of its own, removed on exit. Not for memory://
    /// (in-process only).
    Tail(tail::Tail),
    /// The dead letters of a subscription: list, show one, replay, purge.
    #[command(subcommand)]
    DeadLetters(dead_letters::DeadLetters),
    /// Publish one event, checked against its schema in the publishing service's catalog.
    Publish(publish::Publish),
    /// A web dashboard of the catalogs' subscriptions and their dead letters: read, fix
    /// and replay, or purge them, in a browser. Listens on 127.0.0.1:8080 by default.
    Dashboard(dashboard::Serve),
}

/// Formats of `tidings graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GraphFormat {
    /// A Mermaid flowchart (renders in GitHub Markdown).
    Mermaid,
    /// Graphviz DOT (`dot -Tsvg`).
    Dot,
}

/// A failure of the command: one line, printed as `tidings: <line>`.
#[derive(Debug)]
struct Failure(String);

impl<T: Into<String>> From<T> for Failure {
    fn from(message: T) -> Self {
        Failure(message.into())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(Failure(message)) => {
            // One line, whatever the cause said.
            eprintln!("tidings: {}", message.replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let out = match cli.command {
        Command::DeadLetters(command) => dead_letters::run(command)?,
        Command::Tail(args) => {
            // The catalogs only say which events the topic has; they are optional here.
            let ws = if has_workspace(&cli.files) {
                Some(Workspace::load(&cli.files)?)
            } else {
                None
            };
            tail::run(ws.as_ref(), args)?
        }
        Command::Publish(args) => publish::run(&Workspace::load(&cli.files)?, args)?,
        Command::Dashboard(args) => dashboard::run(&Workspace::load(&cli.files)?, args)?,
        command => return run_catalog(&cli.files, command),
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// Whether catalogs were asked for or a manifest is here.
fn has_workspace(files: &Files) -> bool {
    files.catalog.is_some()
        || files.manifest.is_some()
        || std::path::Path::new("tidings.toml").is_file()
}

/// The commands over catalog files alone.
fn run_catalog(files: &Files, command: Command) -> Result<ExitCode, Failure> {
    let ws = Workspace::load(files)?;
    let out = match command {
        Command::List { json, service } => list::run(&ws, json, service.as_deref())?,
        Command::Validate { update } => return validate::run(&ws, update),
        Command::Asyncapi { output } => {
            let doc = asyncapi::document(&ws);
            let text = format!(
                "{}\n",
                serde_json::to_string_pretty(&doc).expect("JSON serialises")
            );
            if let Some(path) = output {
                std::fs::write(&path, text)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                return Ok(ExitCode::SUCCESS);
            }
            text
        }
        Command::Graph { format } => match format {
            GraphFormat::Mermaid => graph::mermaid(&ws),
            GraphFormat::Dot => graph::dot(&ws),
        },
        Command::Tail(_)
        | Command::DeadLetters(_)
        | Command::Publish(_)
        | Command::Dashboard(_) => {
            unreachable!("broker commands are run by `run`")
        }
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}
