//! `tidings dashboard`: the dead-letter dashboard (the `tidings-dashboard` crate) over a
//! broker, for the subscriptions of the workspace's catalogs.

use std::net::SocketAddr;

use tidings_dashboard::{Auth, Dashboard};

use crate::broker::{self, BrokerArgs};
use crate::workspace::Workspace;
use crate::Failure;

/// The options of `tidings dashboard`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Serve {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The address to listen on. Anything but loopback needs --token or --basic-auth.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: SocketAddr,
    /// Require this token: `Authorization: Bearer <token>`, or as the password of HTTP
    /// basic auth (any user name, recorded in the audit trail).
    #[arg(
        long,
        env = "TIDINGS_DASHBOARD_TOKEN",
        value_name = "TOKEN",
        conflicts_with = "basic_auth"
    )]
    token: Option<String>,
    /// Require HTTP basic auth with this user and password (`user:password`).
    #[arg(
        long,
        env = "TIDINGS_DASHBOARD_BASIC_AUTH",
        value_name = "USER:PASSWORD"
    )]
    basic_auth: Option<String>,
}

impl Serve {
    fn auth(&self) -> Result<Option<Auth>, Failure> {
        if let Some(token) = &self.token {
            if token.is_empty() {
                return Err("--token is empty: give a token, or leave the option out".into());
            }
            return Ok(Some(Auth::token(token.clone())));
        }
        match &self.basic_auth {
            None => Ok(None),
            Some(pair) => match pair.split_once(':') {
                Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                    Ok(Some(Auth::basic(user, password)))
                }
                _ => Err("--basic-auth takes `user:password`, both non-empty".into()),
            },
        }
    }
}

/// Serve the dashboard until Ctrl-C; every change is printed on stderr.
pub(crate) fn run(ws: &Workspace, args: Serve) -> Result<String, Failure> {
    let auth = args.auth()?;
    if auth.is_none() && !args.listen.ip().is_loopback() {
        return Err(format!(
            "--listen {} is not a loopback address: anyone who reaches it could replay and purge dead letters, so pass --token or --basic-auth (or listen on 127.0.0.1)",
            args.listen
        )
        .into());
    }
    let transport = broker::transport(&args.broker.transport)?;
    let title = ws
        .manifest
        .as_ref()
        .and_then(|m| m.workspace.name.clone())
        .unwrap_or_else(|| "tidings".to_string());
    let mut dashboard = Dashboard::new(transport, ws.catalogs.clone())
        .title(title)
        .audit(|entry| eprintln!("tidings: audit: {entry}"));
    if let Some(auth) = auth {
        dashboard = dashboard.auth(auth);
    }
    let app = dashboard.router();
    broker::runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| Failure(format!("cannot listen on {}: {e}", args.listen)))?;
        let local = listener
            .local_addr()
            .map_err(|e| Failure(format!("cannot read the listening address: {e}")))?;
        eprintln!(
            "tidings: the dashboard of {} subscriptions is at http://{local}/ (Ctrl-C stops it)",
            ws.catalogs
                .iter()
                .map(|c| c.subscriptions.len())
                .sum::<usize>()
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| Failure(format!("the dashboard stopped: {e}")))?;
        Ok(String::new())
    })
}
