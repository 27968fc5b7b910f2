//! The audit trail: every change made through the dashboard, with who made it.

use std::fmt;
use std::time::SystemTime;

use uuid::Uuid;

/// A change made through the dashboard.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Dead letters sent back to their subscription as they were.
    Replay {
        /// The ids asked for (empty with `all`).
        ids: Vec<Uuid>,
        /// Every dead letter of the subscription was asked for.
        all: bool,
        /// How many were replayed.
        replayed: usize,
    },
    /// One dead letter sent back with a payload edited in the dashboard.
    ReplayEdited {
        /// The dead letter's envelope id.
        original: Uuid,
        /// The id of the edited copy (the original's, or a new one).
        sent_as: Uuid,
    },
    /// Dead letters deleted for good.
    Purge {
        /// The ids confirmed for deletion.
        ids: Vec<Uuid>,
        /// How many were deleted.
        purged: usize,
    },
}

/// One entry of the audit trail.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When.
    pub time: SystemTime,
    /// Who: the basic-auth user name, `token` for a bearer token, `anonymous` without
    /// auth.
    pub who: String,
    /// The service that owns the subscription.
    pub service: String,
    /// The subscription's broker name.
    pub subscription: String,
    /// The topic's broker name.
    pub topic: String,
    /// What was done.
    pub action: Action,
}

impl fmt::Display for AuditEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids = |ids: &[Uuid]| {
            ids.iter()
                .map(Uuid::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(f, "{} ", self.who)?;
        match &self.action {
            Action::Replay {
                all: true,
                replayed,
                ..
            } => write!(f, "replayed all {replayed} dead letters")?,
            Action::Replay {
                ids: asked,
                replayed,
                ..
            } => write!(
                f,
                "replayed {replayed} of {} dead letters ({})",
                asked.len(),
                ids(asked)
            )?,
            Action::ReplayEdited { original, sent_as } if original == sent_as => write!(
                f,
                "replayed dead letter {original} with an edited payload, keeping its id"
            )?,
            Action::ReplayEdited { original, sent_as } => write!(
                f,
                "replayed dead letter {original} with an edited payload as the new event {sent_as}"
            )?,
            Action::Purge { ids: asked, purged } => {
                write!(f, "purged {purged} dead letters ({})", ids(asked))?
            }
        }
        write!(
            f,
            " of subscription `{}` (service `{}`) on topic `{}`",
            self.subscription, self.service, self.topic
        )
    }
}

/// The default sink: a `tracing` event.
pub(crate) fn to_tracing(entry: &AuditEntry) {
    tracing::info!(target: "tidings_dashboard::audit", who = %entry.who, "{entry}");
}
