//! The SQL of the outbox and the inbox, written once: every statement is built here from
//! the table names and a [`Dialect`], the handful of fragments in which SQLite and
//! PostgreSQL really differ (placeholders, column types, the clock, how a list of
//! sequence numbers is passed, the claim's row lock). Statements are built once per
//! [`Outbox`](crate::Outbox).

/// The fragments of SQL that differ between databases. Each database module defines one
/// (`sqlite::DIALECT`, `postgres::DIALECT`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialect {
    /// The sigil of numbered placeholders: `?` (SQLite's `?1`) or `$` (PostgreSQL's
    /// `$1`). The statements below are written with `$n` and rendered with it.
    pub(crate) placeholder: char,
    /// The type and key of the outbox's `seq` column, increasing with every insert.
    pub(crate) seq_column: &'static str,
    /// A 64-bit integer column.
    pub(crate) integer: &'static str,
    /// A column holding a UUID.
    pub(crate) uuid: &'static str,
    /// A column holding bytes.
    pub(crate) bytes: &'static str,
    /// A timestamp column.
    pub(crate) timestamp: &'static str,
    /// What follows `NOT NULL` on the columns set when a row is written (`created_at`,
    /// `handled_at`): a `DEFAULT` clause or nothing. The statements always set them.
    pub(crate) timestamp_default: &'static str,
    /// The current time, as stored in a timestamp column.
    pub(crate) now: &'static str,
    /// An age bound as `$1`, as a quantity to subtract from [`now`](Self::now).
    pub(crate) age: &'static str,
    /// Milliseconds from the timestamp `MIN(created_at)` of the rows matched until now, as a
    /// 64-bit integer (NULL when no row matched).
    pub(crate) oldest_age_ms: &'static str,
    /// The condition on `seq` that matches the list of sequence numbers bound as `$1`.
    pub(crate) seq_in: &'static str,
    /// What follows the relay's claim query to lock the rows it claims.
    pub(crate) claim_lock: &'static str,
    /// Wraps the insert statement (placeholders `$1`..`$7`) so that it also signals
    /// committed rows, with the channel bound as `$8` (PostgreSQL's `NOTIFY`).
    pub(crate) notify_insert: Option<fn(&str) -> String>,
}

impl Dialect {
    /// `sql`, written with `$n` placeholders, in this dialect.
    fn render(&self, sql: String) -> String {
        if self.placeholder == '$' {
            return sql;
        }
        // Table names hold only ASCII letters, digits and '_', and no statement has a
        // string literal with '$' in it: every '$' starts a placeholder.
        sql.replace('$', &self.placeholder.to_string())
    }
}

/// The columns an outbox row is written with, after `service` and `topic`: `id`,
/// `event_type` and `version` for people and tools reading the table, `meta` (the rest of
/// the envelope's attributes, MessagePack) and `payload` for the relay. The relay reads
/// only `seq, topic, meta, payload`: with sqlx's SQLite driver every column read costs
/// about a microsecond per row, so one compact column beats ten typed ones.
const WRITE_COLUMNS: &str = "id, event_type, version, meta, payload";

/// Every statement of one outbox, in its database's dialect. The comments give the
/// parameters in order.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    /// Creates the tables and indexes, if missing.
    pub(crate) schema: Vec<String>,
    /// Reads the schema version (one `version` column, or no row).
    pub(crate) schema_version: String,
    /// Records the schema version: `version`.
    pub(crate) set_schema_version: String,
    /// Writes one row: `service, topic, id, event_type, version, meta, payload`.
    pub(crate) insert: String,
    /// [`insert`](Self::insert) that also signals the commit, with the channel as the
    /// eighth parameter; `None` when the database has no such signal.
    pub(crate) insert_notify: Option<String>,
    /// Records a handled event, or does nothing if it is recorded:
    /// `scope, event_id, event_type`.
    pub(crate) record: String,
    /// Claims pending rows of a service, oldest first: `service, limit`. Reads
    /// `seq, topic, meta, payload`.
    pub(crate) claim: String,
    /// Marks rows published: the list of their `seq`.
    pub(crate) mark_published: String,
    /// Deletes rows at once instead of marking them: the list of their `seq`.
    pub(crate) delete_published: String,
    /// Parks a row: `seq, error`.
    pub(crate) park: String,
    /// Deletes rows published longer ago than an age: `age`.
    pub(crate) purge_published: String,
    /// Deletes inbox records older than an age: `age`.
    pub(crate) purge_inbox: String,
    /// Counts pending, published and parked rows of a service (every service when
    /// `NULL`): `service`.
    pub(crate) counts: String,
    /// Lists parked rows of a service, oldest first: `service, limit`. Reads
    /// `seq, id, event_type, error`.
    pub(crate) parked: String,
    /// Makes the parked rows of a service pending again: `service`.
    pub(crate) requeue_parked: String,
}

impl Statements {
    /// The statements on the tables `outbox`, `inbox` and `schema`, in `dialect`.
    pub(crate) fn new(outbox: &str, inbox: &str, schema: &str, dialect: &Dialect) -> Self {
        let (o, i, s) = (outbox, inbox, schema);
        let Dialect {
            seq_column,
            integer,
            uuid,
            bytes,
            timestamp: time,
            timestamp_default: time_default,
            now,
            age,
            seq_in,
            claim_lock,
            oldest_age_ms: oldest,
            ..
        } = *dialect;
        let pending = "published_at IS NULL AND parked_at IS NULL";
        let insert = format!(
            "INSERT INTO {o} (service, topic, {WRITE_COLUMNS}, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, {now})"
        );
        let sql = |s: String| dialect.render(s);
        Statements {
            schema: vec![
                format!("CREATE TABLE IF NOT EXISTS {s} (component TEXT PRIMARY KEY, version {integer} NOT NULL)"),
                format!(
                    "CREATE TABLE IF NOT EXISTS {o} (
                seq          {seq_column},
                service      TEXT NOT NULL,
                topic        TEXT NOT NULL,
                id           {uuid} NOT NULL,
                event_type   TEXT NOT NULL,
                version      {integer} NOT NULL,
                meta         {bytes} NOT NULL,
                payload      {bytes} NOT NULL,
                created_at   {time} NOT NULL{time_default},
                published_at {time},
                parked_at    {time},
                last_error   TEXT
            )"
                ),
                format!("CREATE INDEX IF NOT EXISTS {o}_pending ON {o} (service, seq) WHERE {pending}"),
                format!("CREATE INDEX IF NOT EXISTS {o}_published ON {o} (published_at) WHERE published_at IS NOT NULL"),
                format!(
                    "CREATE TABLE IF NOT EXISTS {i} (
                scope      TEXT NOT NULL,
                event_id   {uuid} NOT NULL,
                event_type TEXT NOT NULL,
                handled_at {time} NOT NULL{time_default},
                PRIMARY KEY (scope, event_id)
            )"
                ),
                format!("CREATE INDEX IF NOT EXISTS {i}_handled ON {i} (handled_at)"),
            ],
            schema_version: format!("SELECT version FROM {s} WHERE component = 'outbox'"),
            set_schema_version: sql(format!(
                "INSERT INTO {s} (component, version) VALUES ('outbox', $1)"
            )),
            insert_notify: dialect.notify_insert.map(|wrap| sql(wrap(&insert))),
            insert: sql(insert),
            record: sql(format!(
                "INSERT INTO {i} (scope, event_id, event_type, handled_at) VALUES ($1, $2, $3, {now}) ON CONFLICT DO NOTHING"
            )),
            claim: sql(format!(
                "SELECT seq, topic, meta, payload FROM {o} WHERE service = $1 AND {pending} ORDER BY seq LIMIT $2{claim_lock}"
            )),
            mark_published: sql(format!(
                "UPDATE {o} SET published_at = {now} WHERE seq {seq_in}"
            )),
            delete_published: sql(format!("DELETE FROM {o} WHERE seq {seq_in}")),
            park: sql(format!(
                "UPDATE {o} SET parked_at = {now}, last_error = $2 WHERE seq = $1"
            )),
            purge_published: sql(format!(
                "DELETE FROM {o} WHERE published_at IS NOT NULL AND published_at <= {now} - {age}"
            )),
            purge_inbox: sql(format!("DELETE FROM {i} WHERE handled_at <= {now} - {age}")),
            counts: sql(format!(
                "SELECT
                    COUNT(*) FILTER (WHERE {pending}),
                    COUNT(*) FILTER (WHERE published_at IS NOT NULL),
                    COUNT(*) FILTER (WHERE parked_at IS NOT NULL),
                    (SELECT {oldest} FROM {o} WHERE {pending} AND (CAST($1 AS TEXT) IS NULL OR service = $1))
                 FROM {o} WHERE CAST($1 AS TEXT) IS NULL OR service = $1"
            )),
            parked: sql(format!(
                "SELECT seq, id, event_type, COALESCE(last_error, '') FROM {o} WHERE service = $1 AND parked_at IS NOT NULL ORDER BY seq LIMIT $2"
            )),
            requeue_parked: sql(format!(
                "UPDATE {o} SET parked_at = NULL, last_error = NULL WHERE service = $1 AND parked_at IS NOT NULL"
            )),
        }
    }

    /// Every statement, for tests.
    #[cfg(test)]
    fn all(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.schema.iter().map(String::as_str).collect();
        all.extend([
            self.schema_version.as_str(),
            &self.set_schema_version,
            &self.insert,
            &self.record,
            &self.claim,
            &self.mark_published,
            &self.delete_published,
            &self.park,
            &self.purge_published,
            &self.purge_inbox,
            &self.counts,
            &self.parked,
            &self.requeue_parked,
        ]);
        all.extend(self.insert_notify.as_deref());
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOLLAR: Dialect = Dialect {
        placeholder: '$',
        seq_column: "SEQ",
        integer: "INT",
        uuid: "UUID",
        bytes: "BYTES",
        timestamp: "TIME",
        timestamp_default: "",
        now: "NOW",
        age: "$1",
        oldest_age_ms: "AGE(MIN(created_at))",
        seq_in: "= ANY($1)",
        claim_lock: " LOCK",
        notify_insert: None,
    };

    #[test]
    fn placeholders_are_rendered_in_the_dialect() {
        let question = Dialect {
            placeholder: '?',
            notify_insert: Some(|insert| format!("{insert}; NOTIFY $8")),
            ..DOLLAR
        };
        let dollar = Statements::new("o", "i", "s", &DOLLAR);
        let question = Statements::new("o", "i", "s", &question);
        assert_eq!(
            dollar.park,
            "UPDATE o SET parked_at = NOW, last_error = $2 WHERE seq = $1"
        );
        assert_eq!(
            question.park,
            "UPDATE o SET parked_at = NOW, last_error = ?2 WHERE seq = ?1"
        );
        assert!(question.all().iter().all(|s| !s.contains('$')));
        assert!(question.insert_notify.unwrap().ends_with("NOTIFY ?8"));
        assert_eq!(
            dollar.claim,
            "SELECT seq, topic, meta, payload FROM o WHERE service = $1 AND published_at IS NULL AND parked_at IS NULL ORDER BY seq LIMIT $2 LOCK"
        );
    }
}
