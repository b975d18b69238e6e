//! The site's persistent state in SQLite (`state.db`, WAL mode): trusted
//! endorsers, the rollback memory, every image the site knows with its state,
//! the append-only audit log, and the hook outbox.
//!
//! Every state change and the audit/outbox rows describing it are written in
//! one transaction, so a crash never leaves an action without its record or a
//! hook event lost.

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;

use vmic_format::catalog::Image;
use vmic_format::digest::Sha256Digest;
use vmic_format::ids::{EndorserName, ImageId, InvalidValue, Version};
use vmic_format::image_format::FormatName;
use vmic_format::minisign::PublicKey;

use crate::error::{Error, Result};
use crate::model::{ApproveMode, Decider, HookEvent, ImageState, StoredText};

mod log;
mod vo;
pub use log::{Actor, Head, LogCheck, LogFilter, current_user};
pub use vo::{MemberRow, VoMemory, VoRow};

const SCHEMA_VERSION: i64 = 6;

/// Migrations, applied in order; index + 1 is the schema version reached.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE endorsers (
    name TEXT PRIMARY KEY,
    pubkey TEXT NOT NULL,
    key_id TEXT NOT NULL,
    url TEXT NOT NULL,
    ca_file TEXT,
    approve TEXT NOT NULL,
    added_at TEXT NOT NULL,
    last_sync TEXT,
    last_error TEXT
);
-- Rollback memory, per signing key: survives `trust remove` so re-adding a
-- key cannot reopen the door to an old catalog.
CREATE TABLE serials (
    key_id TEXT PRIMARY KEY,
    highest_serial INTEGER NOT NULL,
    catalog_sha256 TEXT NOT NULL,
    expires TEXT NOT NULL,
    accepted_at TEXT NOT NULL
);
CREATE TABLE images (
    endorser TEXT NOT NULL,
    id TEXT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    decided_by TEXT NOT NULL DEFAULT 'policy',
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    format TEXT NOT NULL,
    entry TEXT NOT NULL,
    store_path TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (endorser, id, version)
);
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    endorser TEXT,
    image TEXT,
    detail TEXT NOT NULL
);
CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    event TEXT NOT NULL,
    env TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
"#,
    r#"
-- Version 2: rollback memory keyed by the whole public key. A key id is
-- chosen by whoever makes the key, so another endorser could claim it.
-- `serials` (keyed by key id) stays as the legacy record; its rows move over
-- for every key a trusted endorser has now, and `trust add` adopts a legacy
-- row for a key trusted again later.
CREATE TABLE rollback (
    pubkey TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    highest_serial INTEGER NOT NULL,
    catalog_sha256 TEXT NOT NULL,
    expires TEXT NOT NULL,
    accepted_at TEXT NOT NULL
);
INSERT OR IGNORE INTO rollback (pubkey, key_id, highest_serial, catalog_sha256, expires, accepted_at)
    SELECT trim(substr(e.pubkey, instr(e.pubkey, char(10)) + 1), char(10) || char(13) || ' '),
           s.key_id, s.highest_serial, s.catalog_sha256, s.expires, s.accepted_at
    FROM serials s JOIN endorsers e ON e.key_id = s.key_id;
"#,
    r#"
-- Version 3: bounded retries. A download that failed its check is tried
-- again only after a wait that doubles with each failure; an endorser whose
-- catalog stays missing is reported "gone" once instead of failing forever.
CREATE TABLE fetch_backoff (
    endorser TEXT NOT NULL,
    id TEXT NOT NULL,
    version TEXT NOT NULL,
    failures INTEGER NOT NULL,
    retry_after TEXT NOT NULL,
    PRIMARY KEY (endorser, id, version)
);
ALTER TABLE endorsers ADD COLUMN missing_since TEXT;
ALTER TABLE endorsers ADD COLUMN gone_since TEXT;
"#,
    r#"
-- Version 4: the serial whose coming expiry was last announced, so the
-- `expiring` hook fires once per catalog, not at every cron run.
ALTER TABLE endorsers ADD COLUMN expiry_warned_serial INTEGER;
"#,
    r#"
-- Version 5: the trust lifecycle. Endorsers may come from VO lists as
-- well as from `trust add` (`direct`); they may have several catalog
-- sources (`mirrors`, tried after `url`); an endorser a VO removed with
-- "keep" is `retired`: no longer synced, its images kept.
ALTER TABLE endorsers ADD COLUMN mirrors TEXT NOT NULL DEFAULT '';
ALTER TABLE endorsers ADD COLUMN direct INTEGER NOT NULL DEFAULT 1;
ALTER TABLE endorsers ADD COLUMN retired TEXT;
-- How long its images stay after its catalog expired (an endorser on holiday).
ALTER TABLE endorsers ADD COLUMN grace_secs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE endorsers ADD COLUMN last_success TEXT;
-- When the catalog at the highest serial was issued (for `trust list`).
ALTER TABLE rollback ADD COLUMN issued TEXT;
CREATE TABLE vos (
    name TEXT PRIMARY KEY,
    pubkeys TEXT NOT NULL,
    threshold INTEGER NOT NULL,
    urls TEXT NOT NULL,
    ca_file TEXT,
    endorsers TEXT NOT NULL,
    added_at TEXT NOT NULL,
    last_sync TEXT,
    last_error TEXT,
    expiry_warned_serial INTEGER,
    -- The list serial this site's endorsers were last reconciled with: a
    -- VO removed and added again is reconciled again with the same list.
    reconciled_serial INTEGER
);
-- Rollback memory of VO lists, by VO name: kept after `vo remove`.
CREATE TABLE vo_rollback (
    vo TEXT PRIMARY KEY,
    highest_serial INTEGER NOT NULL,
    list_sha256 TEXT NOT NULL,
    expires TEXT NOT NULL,
    accepted_at TEXT NOT NULL
);
-- What each VO's list says about each endorser, and what this site made of it.
CREATE TABLE vo_endorsers (
    vo TEXT NOT NULL,
    name TEXT NOT NULL,
    pubkey TEXT NOT NULL,
    urls TEXT NOT NULL,
    status TEXT NOT NULL,
    since TEXT NOT NULL,
    PRIMARY KEY (vo, name)
);
-- Every key an endorser was re-pinned away from (rotation statement, VO
-- list or `trust rekey`), so a stale VO list cannot pin an old key again.
-- Catalog sources that failed (down, or serving bytes that did not
-- authenticate): tried after the healthy ones until `until`.
CREATE TABLE source_health (
    endorser TEXT NOT NULL,
    source TEXT NOT NULL,
    until TEXT NOT NULL,
    error TEXT NOT NULL,
    PRIMARY KEY (endorser, source)
);
CREATE TABLE key_history (
    endorser TEXT NOT NULL,
    pubkey TEXT NOT NULL,
    replaced_by TEXT NOT NULL,
    at TEXT NOT NULL
);
"#,
    r#"
-- Version 6: the audit log as evidence (state/log.rs). Each entry records
-- who acted and with what command, and is chained by hash to the one
-- before; entries from before this version carry no hash.
ALTER TABLE audit ADD COLUMN actor TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN command TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN prev_hash TEXT;
ALTER TABLE audit ADD COLUMN hash TEXT;
"#,
];

/// The longest wait between two attempts at an image that keeps failing
/// its check (unless the first wait is set longer).
const MAX_BACKOFF_SECS: i64 = 86_400;

/// The site database (`state.db`).
pub struct State {
    conn: Connection,
    /// The schema version of the open database: older ones are read as
    /// they are by the read-only commands.
    version: i64,
    /// Who acts, recorded in every audit entry.
    actor: Actor,
    /// `audit.head`, rewritten after every commit that appended to the log.
    head_path: std::path::PathBuf,
}

/// A trusted endorser as stored.
#[derive(Clone, Debug, Serialize)]
pub struct EndorserRow {
    /// The site's name for the endorser.
    pub name: EndorserName,
    /// The trusted minisign public key, in its file format.
    pub pubkey: String,
    /// Its key id.
    pub key_id: String,
    /// Where its catalog is published (URL or absolute directory).
    pub url: String,
    /// Extra CA certificates for that source.
    pub ca_file: Option<String>,
    /// How its new images are approved.
    pub approve: ApproveMode,
    /// When it was trusted.
    pub added_at: String,
    /// When it was last synced.
    pub last_sync: Option<String>,
    /// What failed at the last sync, if anything.
    pub last_error: Option<String>,
    /// Since when its catalog has been missing (HTTP 404/410, no file).
    pub missing_since: Option<String>,
    /// When it was reported gone (missing longer than `gone_after`).
    pub gone_since: Option<String>,
    /// More catalog sources, tried in order after `url`.
    pub mirrors: Vec<String>,
    /// Trusted by `trust add` (not only through VO lists).
    pub direct: bool,
    /// Why it is no longer synced while its images are kept (a VO removed
    /// it with `images = "keep"`), if so.
    pub retired: Option<String>,
    /// Seconds its images stay after its catalog expired (0: none).
    pub grace_secs: u64,
    /// When a sync last succeeded.
    pub last_success: Option<String>,
}

impl EndorserRow {
    /// Every catalog source, in the order they are tried.
    pub fn sources(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.url.as_str()).chain(self.mirrors.iter().map(String::as_str))
    }
}

/// The rollback memory for one signing key.
#[derive(Clone, Debug, Serialize)]
pub struct SerialRow {
    /// The highest serial ever accepted.
    pub highest_serial: u64,
    /// SHA-256 of the catalog accepted at that serial.
    pub catalog_sha256: String,
    /// Its expiry (RFC 3339).
    pub expires: String,
    /// When it was issued (schema 5 on).
    pub issued: Option<String>,
}

/// One image the site knows, as stored: every field parsed back into its
/// type when read.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRow {
    /// The endorser it came from.
    pub endorser: EndorserName,
    /// Image id.
    pub id: ImageId,
    /// Image version.
    pub version: Version,
    /// Where it stands.
    pub state: ImageState,
    /// Why.
    pub reason: String,
    /// Who decided.
    pub decided_by: Decider,
    /// Declared size.
    pub size: u64,
    /// Signed whole-file SHA-256.
    pub sha256: Sha256Digest,
    /// Declared format.
    pub format: FormatName,
    /// The signed catalog entry (JSON of [`Image`]) the decision was about.
    pub entry: String,
    /// Path under `store/` while imported.
    pub store_path: Option<String>,
    /// When the row last changed.
    pub updated_at: String,
}

impl ImageRow {
    /// `id@version`.
    pub fn label(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }

    /// The signed catalog entry, parsed and validated again.
    pub fn image(&self) -> Result<Image> {
        serde_json::from_str(&self.entry).map_err(|e| {
            Error::io_failure(format!(
                "site database: entry of {}/{} is corrupt: {e}",
                self.endorser,
                self.label()
            ))
        })
    }
}

/// One image as `vmic images --json` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ImageSummary {
    /// The endorser it came from.
    pub endorser: EndorserName,
    /// Image id.
    pub id: ImageId,
    /// Image version.
    pub version: Version,
    /// Where it stands.
    pub state: ImageState,
    /// Why.
    pub reason: String,
    /// Who decided.
    pub decided_by: Decider,
    /// Declared size.
    pub size: u64,
    /// Signed whole-file SHA-256.
    pub sha256: Sha256Digest,
    /// Declared format.
    pub format: FormatName,
    /// Path under `store/` while imported.
    pub store_path: Option<String>,
    /// When the row last changed.
    pub updated_at: String,
}

impl From<&ImageRow> for ImageSummary {
    fn from(row: &ImageRow) -> ImageSummary {
        ImageSummary {
            endorser: row.endorser.clone(),
            id: row.id.clone(),
            version: row.version.clone(),
            state: row.state,
            reason: row.reason.clone(),
            decided_by: row.decided_by,
            size: row.size,
            sha256: row.sha256,
            format: row.format.clone(),
            store_path: row.store_path.clone(),
            updated_at: row.updated_at.clone(),
        }
    }
}

/// One entry of the append-only audit log.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRow {
    /// Sequence number.
    pub seq: i64,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// What happened (`imported`, `revoke`, `catalog-accepted`, …).
    pub action: String,
    /// The endorser concerned.
    pub endorser: Option<String>,
    /// The image concerned (`id@version`).
    pub image: Option<String>,
    /// Details.
    pub detail: String,
    /// Who acted (empty before schema 6).
    pub actor: String,
    /// The command that acted (empty before schema 6).
    pub command: String,
    /// SHA-256 chaining this entry to the one before (`None` before
    /// schema 6).
    pub hash: Option<String>,
}

/// A hook event waiting to be delivered.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    /// Sequence number.
    pub seq: i64,
    /// The event name.
    pub event: String,
    /// The `VMIC_*` environment for the hook.
    pub env: Vec<(String, String)>,
    /// Failed deliveries so far.
    pub attempts: i64,
}

/// Now, to the second, as stored.
pub fn now() -> String {
    let t = jiff::Timestamp::now();
    jiff::Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::io_failure(format!("site database {}: {e}", path.display()))
}

/// A stored newline-separated list.
fn split_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn sql(e: rusqlite::Error) -> Error {
    Error::io_failure(format!("site database: {e}"))
}

impl State {
    /// Open (creating if `create`) and migrate the database.
    pub fn open(path: &Path, create: bool) -> Result<State> {
        if !create && !path.exists() {
            return Err(Error::input(format!(
                "no site database at {}; run `vmic site init` first",
                path.display()
            )));
        }
        let conn = Connection::open(path).map_err(db_err(path))?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(db_err(path))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err(path))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db_err(path))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db_err(path))?;
        let mut state = State {
            conn,
            version: SCHEMA_VERSION,
            actor: Actor::default(),
            head_path: log::head_path(path),
        };
        state.migrate(path)?;
        Ok(state)
    }

    /// Open for reading only: no lock, no migration, no writes. SQLite's WAL
    /// gives a consistent snapshot while a sync writes.
    pub fn open_read_only(path: &Path) -> Result<State> {
        if !path.exists() {
            return Err(Error::input(format!(
                "no site database at {}; run `vmic site init` first",
                path.display()
            )));
        }
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(db_err(path))?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(db_err(path))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(db_err(path))?;
        // Later schema versions only add tables and columns the reading
        // commands do without, so an older database reads as it is (a
        // writer migrates it).
        if !(1..=SCHEMA_VERSION).contains(&version) {
            return Err(Error::input(format!(
                "site database {} has schema version {version}; this vmic reads versions 1 to {SCHEMA_VERSION}",
                path.display()
            )));
        }
        Ok(State {
            conn,
            version,
            actor: Actor::default(),
            head_path: log::head_path(path),
        })
    }

    /// Record `actor` in every audit entry written from now on.
    pub fn set_actor(&mut self, actor: Actor) {
        self.actor = actor;
    }

    /// The head `audit.head` records (see [`State::verify_log`]).
    pub fn kept_head(&self) -> Option<Head> {
        Head::parse(&std::fs::read_to_string(&self.head_path).ok()?)
    }

    fn migrate(&mut self, path: &Path) -> Result<()> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(db_err(path))?;
        if version > SCHEMA_VERSION {
            return Err(Error::input(format!(
                "site database {} has schema version {version}, newer than this vmic ({SCHEMA_VERSION}); upgrade vmic",
                path.display()
            )));
        }
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction().map_err(db_err(path))?;
            tx.execute_batch(migration).map_err(db_err(path))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(db_err(path))?;
            tx.commit().map_err(db_err(path))?;
        }
        Ok(())
    }

    /// Start a write transaction.
    pub fn transaction(&mut self) -> Result<Tx<'_>> {
        Ok(Tx {
            tx: self.conn.transaction().map_err(sql)?,
            actor: &self.actor,
            head_path: &self.head_path,
            head: std::cell::RefCell::new(None),
        })
    }

    /// Every trusted endorser, by name.
    pub fn endorsers(&self) -> Result<Vec<EndorserRow>> {
        self.query_endorsers(None)
    }

    /// The endorsers called `name` (at most one), or all of them.
    fn query_endorsers(&self, name: Option<&str>) -> Result<Vec<EndorserRow>> {
        let columns = match self.version {
            5.. => {
                "name, pubkey, key_id, url, ca_file, approve, added_at, last_sync, last_error, missing_since, gone_since, mirrors, direct, retired, grace_secs, last_success"
            }
            3 | 4 => {
                "name, pubkey, key_id, url, ca_file, approve, added_at, last_sync, last_error, missing_since, gone_since, '', 1, NULL, 0, NULL"
            }
            _ => {
                "name, pubkey, key_id, url, ca_file, approve, added_at, last_sync, last_error, NULL, NULL, '', 1, NULL, 0, NULL"
            }
        };
        let filter = if name.is_some() {
            "WHERE name = ?1"
        } else {
            ""
        };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {columns} FROM endorsers {filter} ORDER BY name"
            ))
            .map_err(sql)?;
        let params: Vec<&dyn rusqlite::ToSql> = match &name {
            Some(n) => vec![n],
            None => Vec::new(),
        };
        let rows = stmt
            .query_map(params.as_slice(), |r| {
                Ok(EndorserRow {
                    name: parsed(r, 0, EndorserName::parse)?,
                    pubkey: r.get(1)?,
                    key_id: r.get(2)?,
                    url: r.get(3)?,
                    ca_file: r.get(4)?,
                    approve: parsed(r, 5, |t| {
                        ApproveMode::parse(t).map_err(|e| InvalidValue(e.message().into()))
                    })?,
                    added_at: r.get(6)?,
                    last_sync: r.get(7)?,
                    last_error: r.get(8)?,
                    missing_since: r.get(9)?,
                    gone_since: r.get(10)?,
                    mirrors: split_lines(&r.get::<_, String>(11)?),
                    direct: r.get(12)?,
                    retired: r.get(13)?,
                    grace_secs: r.get::<_, i64>(14)?.max(0) as u64,
                    last_success: r.get(15)?,
                })
            })
            .map_err(sql)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql)
    }

    /// The trusted endorser called `name`.
    pub fn endorser(&self, name: &str) -> Result<Option<EndorserRow>> {
        Ok(self.query_endorsers(Some(name))?.into_iter().next())
    }

    /// The rollback memory of `key` (the whole key, never its id alone).
    pub fn serial(&self, key: &PublicKey) -> Result<Option<SerialRow>> {
        // A schema-1 database, read as it is, kept the memory per key id.
        let (query, id) = match self.version {
            5.. => (
                "SELECT highest_serial, catalog_sha256, expires, issued FROM rollback WHERE pubkey = ?1",
                key.to_base64(),
            ),
            2..=4 => (
                "SELECT highest_serial, catalog_sha256, expires, NULL FROM rollback WHERE pubkey = ?1",
                key.to_base64(),
            ),
            _ => (
                "SELECT highest_serial, catalog_sha256, expires, NULL FROM serials WHERE key_id = ?1",
                key.key_id.to_string(),
            ),
        };
        self.conn
            .query_row(query, params![id], |r| {
                Ok(SerialRow {
                    highest_serial: r.get::<_, i64>(0)? as u64,
                    catalog_sha256: r.get(1)?,
                    expires: r.get(2)?,
                    issued: r.get(3)?,
                })
            })
            .optional()
            .map_err(sql)
    }

    /// When `row` may next be fetched, after failed downloads: (failures
    /// so far, not before).
    pub fn backoff(&self, row: &ImageRow) -> Result<Option<(u32, Timestamp)>> {
        let found: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT failures, retry_after FROM fetch_backoff WHERE endorser = ?1 AND id = ?2 AND version = ?3",
                params![row.endorser.as_str(), row.id.as_str(), row.version.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql)?;
        // An unreadable time means no wait: retrying is the safe side.
        Ok(found.and_then(|(n, at)| Some((n as u32, at.parse().ok()?))))
    }

    /// Every image the site knows.
    pub fn images(&self) -> Result<Vec<ImageRow>> {
        query_images(&self.conn, "1 = 1", params![])
    }

    /// The images of one endorser.
    pub fn images_of(&self, endorser: &str) -> Result<Vec<ImageRow>> {
        query_images(&self.conn, "endorser = ?1", params![endorser])
    }

    /// Imported images whose signed bytes are `sha256` and `size`, under
    /// whatever endorser and name.
    pub fn imported_with(&self, sha256: &Sha256Digest, size: u64) -> Result<Vec<ImageRow>> {
        query_images(
            &self.conn,
            "state = ?1 AND sha256 = ?2 AND size = ?3",
            params![ImageState::Imported.as_str(), sha256.to_hex(), size as i64],
        )
    }

    /// The whole audit log, oldest first.
    pub fn audit(&self) -> Result<Vec<AuditRow>> {
        let columns = match self.version {
            6.. => "seq, at, action, endorser, image, detail, actor, command, hash",
            _ => "seq, at, action, endorser, image, detail, '', '', NULL",
        };
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {columns} FROM audit ORDER BY seq"))
            .map_err(sql)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(AuditRow {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    action: r.get(2)?,
                    endorser: r.get(3)?,
                    image: r.get(4)?,
                    detail: r.get(5)?,
                    actor: r.get(6)?,
                    command: r.get(7)?,
                    hash: r.get(8)?,
                })
            })
            .map_err(sql)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql)
    }

    /// Queued hook events, oldest first.
    pub fn outbox(&self) -> Result<Vec<OutboxRow>> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, event, env, attempts FROM outbox ORDER BY seq")
            .map_err(sql)?;
        let rows = stmt
            .query_map([], |r| {
                let env: String = r.get(2)?;
                Ok((r.get(0)?, r.get(1)?, env, r.get(3)?))
            })
            .map_err(sql)?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, event, env, attempts): (i64, String, String, i64) = row.map_err(sql)?;
            let env: Vec<(String, String)> = serde_json::from_str(&env).map_err(|e| {
                Error::io_failure(format!("site database: outbox entry {seq} is corrupt: {e}"))
            })?;
            out.push(OutboxRow {
                seq,
                event,
                env,
                attempts,
            });
        }
        Ok(out)
    }

    /// A hook ran successfully: forget the event (and log it).
    pub fn outbox_done(&mut self, seq: i64, event: &str, detail: &str) -> Result<()> {
        let tx = self.transaction()?;
        tx.tx
            .execute("DELETE FROM outbox WHERE seq = ?1", params![seq])
            .map_err(sql)?;
        tx.audit("hook-ok", None, None, &format!("{event}: {detail}"))?;
        tx.commit()
    }

    /// A hook failed: keep the event for the next sync (and log it).
    pub fn outbox_failed(&mut self, seq: i64, event: &str, error: &str) -> Result<()> {
        let tx = self.transaction()?;
        tx.tx
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2 WHERE seq = ?1",
                params![seq, error],
            )
            .map_err(sql)?;
        tx.audit("hook-failed", None, None, &format!("{event}: {error}"))?;
        tx.commit()
    }
}

/// Column `idx` parsed by `parse`; a value that does not parse is a corrupt
/// database, reported as such.
fn parsed<T>(
    row: &rusqlite::Row<'_>,
    idx: usize,
    parse: impl FnOnce(&str) -> std::result::Result<T, InvalidValue>,
) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    parse(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Parse a value stored as text.
fn stored<T: StoredText>(text: &str) -> std::result::Result<T, InvalidValue> {
    T::from_stored(text).ok_or_else(|| InvalidValue(format!("unknown stored value {text:?}")))
}

fn query_images(
    conn: &Connection,
    filter: &str,
    p: &[&dyn rusqlite::ToSql],
) -> Result<Vec<ImageRow>> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT endorser, id, version, state, reason, decided_by, size, sha256, format, entry, store_path, updated_at \
             FROM images WHERE {filter} ORDER BY endorser, id, version"
        ))
        .map_err(sql)?;
    let rows = stmt
        .query_map(p, |r| {
            Ok(ImageRow {
                endorser: parsed(r, 0, EndorserName::parse)?,
                id: parsed(r, 1, ImageId::parse)?,
                version: parsed(r, 2, Version::parse)?,
                state: parsed(r, 3, stored::<ImageState>)?,
                reason: r.get(4)?,
                decided_by: parsed(r, 5, stored::<Decider>)?,
                size: r.get::<_, i64>(6)? as u64,
                sha256: parsed(r, 7, |t| {
                    Sha256Digest::from_hex(t)
                        .ok_or_else(|| InvalidValue(format!("{t:?} is not a SHA-256 digest")))
                })?,
                format: parsed(r, 8, FormatName::parse)?,
                entry: r.get(9)?,
                store_path: r.get(10)?,
                updated_at: r.get(11)?,
            })
        })
        .map_err(sql)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql)
}

/// A write transaction with the operations sync and the CLI need.
pub struct Tx<'a> {
    tx: Transaction<'a>,
    actor: &'a Actor,
    head_path: &'a Path,
    /// The newest entry this transaction appended.
    head: std::cell::RefCell<Option<Head>>,
}

impl Tx<'_> {
    /// Make every change of the transaction durable at once.
    pub fn commit(self) -> Result<()> {
        self.tx.commit().map_err(sql)?;
        if let Some(head) = self.head.into_inner() {
            log::write_head(self.head_path, &head);
        }
        Ok(())
    }

    /// Append to the audit log.
    pub fn audit(
        &self,
        action: &str,
        endorser: Option<&str>,
        image: Option<&str>,
        detail: &str,
    ) -> Result<()> {
        let head = log::append(&self.tx, self.actor, (action, endorser, image, detail))?;
        *self.head.borrow_mut() = Some(head);
        Ok(())
    }

    /// Queue a hook event, delivered after the transaction commits.
    pub fn enqueue_hook(&self, event: HookEvent, env: &[(String, String)]) -> Result<()> {
        let env = serde_json::to_string(env).unwrap_or_else(|_| "[]".into());
        self.tx
            .execute(
                "INSERT INTO outbox (created_at, event, env) VALUES (?1, ?2, ?3)",
                params![now(), event.as_str(), env],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// Trust a new endorser; an existing name is refused.
    pub fn add_endorser(&self, e: &EndorserRow) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO endorsers (name, pubkey, key_id, url, ca_file, approve, added_at, mirrors, direct, retired, grace_secs) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![e.name.as_str(), e.pubkey, e.key_id, e.url, e.ca_file, e.approve.as_str(), e.added_at, e.mirrors.join("\n"), e.direct, e.retired, e.grace_secs as i64],
            )
            .map(|_| ())
            .map_err(|err| match err {
                rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                    Error::input(format!("endorser {} is already trusted; remove it first to change it", e.name))
                }
                other => sql(other),
            })
    }

    /// For a key trusted again: take over the memory a release before
    /// schema 2 kept under its key id, if there is any and the key has none.
    /// Keeping a rollback memory too high is the safe side of the error.
    pub fn adopt_legacy_serial(&self, key: &PublicKey) -> Result<()> {
        self.tx
            .execute(
                "INSERT OR IGNORE INTO rollback (pubkey, key_id, highest_serial, catalog_sha256, expires, accepted_at) \
                 SELECT ?1, key_id, highest_serial, catalog_sha256, expires, accepted_at FROM serials WHERE key_id = ?2",
                params![key.to_base64(), key.key_id.to_string()],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// Store an endorser's source, CA file, approval mode and missing/gone
    /// marks (its name and key do not change).
    pub fn update_endorser(&self, e: &EndorserRow) -> Result<()> {
        self.tx
            .execute(
                "UPDATE endorsers SET url = ?2, ca_file = ?3, approve = ?4, missing_since = ?5, gone_since = ?6, mirrors = ?7, direct = ?8, retired = ?9, grace_secs = ?10 WHERE name = ?1",
                params![e.name.as_str(), e.url, e.ca_file, e.approve.as_str(), e.missing_since, e.gone_since, e.mirrors.join("\n"), e.direct, e.retired, e.grace_secs as i64],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// Forget an endorser (its images and rollback memory stay).
    pub fn remove_endorser(&self, name: &str) -> Result<()> {
        self.tx
            .execute("DELETE FROM endorsers WHERE name = ?1", params![name])
            .map(|_| ())
            .map_err(sql)
    }

    /// One more failed download of `row`: the next attempt waits `first`
    /// seconds doubled per earlier failure (at most a day, or `first`).
    /// Returns the time before which it is not tried again.
    pub fn record_fetch_failure(
        &self,
        row: &ImageRow,
        first: u64,
        now: Timestamp,
    ) -> Result<Timestamp> {
        let key = params![row.endorser.as_str(), row.id.as_str(), row.version.as_str()];
        let failures: i64 = self
            .tx
            .query_row(
                "SELECT failures FROM fetch_backoff WHERE endorser = ?1 AND id = ?2 AND version = ?3",
                key,
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?
            .unwrap_or(0)
            + 1;
        let first = i64::try_from(first).unwrap_or(i64::MAX);
        let wait = first
            .saturating_mul(1i64 << (failures - 1).clamp(0, 30))
            .min(MAX_BACKOFF_SECS.max(first));
        let retry_after = now
            .checked_add(jiff::SignedDuration::from_secs(wait))
            .unwrap_or(Timestamp::MAX);
        self.tx
            .execute(
                "INSERT INTO fetch_backoff (endorser, id, version, failures, retry_after) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT(endorser, id, version) DO UPDATE SET failures = excluded.failures, retry_after = excluded.retry_after",
                params![row.endorser.as_str(), row.id.as_str(), row.version.as_str(), failures, retry_after.to_string()],
            )
            .map_err(sql)?;
        Ok(retry_after)
    }

    /// Forget the failures of `row` (it imported, or the operator asked
    /// for another attempt).
    pub fn clear_backoff(&self, row: &ImageRow) -> Result<()> {
        self.tx
            .execute(
                "DELETE FROM fetch_backoff WHERE endorser = ?1 AND id = ?2 AND version = ?3",
                params![row.endorser.as_str(), row.id.as_str(), row.version.as_str()],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// The catalog of `name` is missing: remember since when (the first
    /// time only). Returns that time.
    pub fn record_missing(&self, name: &str, now: Timestamp) -> Result<String> {
        self.tx
            .execute(
                "UPDATE endorsers SET missing_since = coalesce(missing_since, ?2) WHERE name = ?1",
                params![name, now.to_string()],
            )
            .map_err(sql)?;
        self.tx
            .query_row(
                "SELECT missing_since FROM endorsers WHERE name = ?1",
                params![name],
                |r| r.get::<_, Option<String>>(0),
            )
            .map(|since| since.unwrap_or_else(|| now.to_string()))
            .map_err(sql)
    }

    /// `name` has been missing too long: reported gone now.
    pub fn mark_gone(&self, name: &str, now: Timestamp) -> Result<()> {
        self.tx
            .execute(
                "UPDATE endorsers SET gone_since = ?2 WHERE name = ?1",
                params![name, now.to_string()],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// Record that the coming expiry of `name`'s catalog `serial` was
    /// announced; true if it had not been before.
    pub fn announce_expiry(&self, name: &str, serial: u64) -> Result<bool> {
        self.tx
            .execute(
                "UPDATE endorsers SET expiry_warned_serial = ?2 WHERE name = ?1 \
                 AND (expiry_warned_serial IS NULL OR expiry_warned_serial <> ?2)",
                params![name, serial as i64],
            )
            .map(|changed| changed > 0)
            .map_err(sql)
    }

    /// A catalog of `name` was found again: neither missing nor gone.
    pub fn clear_missing(&self, name: &str) -> Result<()> {
        self.tx
            .execute(
                "UPDATE endorsers SET missing_since = NULL, gone_since = NULL WHERE name = ?1",
                params![name],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// Record the time and outcome of a sync.
    pub fn record_sync(&self, name: &str, error: Option<&str>) -> Result<()> {
        self.tx
            .execute(
                "UPDATE endorsers SET last_sync = ?2, last_error = ?3, \
                 last_success = CASE WHEN ?3 IS NULL THEN ?2 ELSE last_success END WHERE name = ?1",
                params![name, now(), error],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// Pin another key for an endorser (its name, decisions and images stay).
    pub fn set_endorser_key(&self, name: &str, key: &PublicKey) -> Result<()> {
        self.tx
            .execute(
                "UPDATE endorsers SET pubkey = ?2, key_id = ?3 WHERE name = ?1",
                params![name, key.to_file_string(), key.key_id.to_string()],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// Give `to` the rollback memory of `from` (the endorser's history goes
    /// on under its new key), unless `to` remembers a higher serial already.
    pub fn carry_rollback(&self, from: &PublicKey, to: &PublicKey) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO rollback (pubkey, key_id, highest_serial, catalog_sha256, expires, accepted_at) \
                 SELECT ?2, ?3, highest_serial, catalog_sha256, expires, accepted_at FROM rollback WHERE pubkey = ?1 \
                 ON CONFLICT(pubkey) DO UPDATE SET highest_serial = excluded.highest_serial, \
                 catalog_sha256 = excluded.catalog_sha256, expires = excluded.expires, accepted_at = excluded.accepted_at \
                 WHERE excluded.highest_serial > rollback.highest_serial",
                params![from.to_base64(), to.to_base64(), to.key_id.to_string()],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// Forget the rollback memory of `key` (the operator's explicit reset
    /// after a compromise; nothing else lowers it).
    pub fn forget_rollback(&self, key: &PublicKey) -> Result<()> {
        self.tx
            .execute(
                "DELETE FROM rollback WHERE pubkey = ?1",
                params![key.to_base64()],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// Record when the catalog at `serial` was issued, for `trust list`.
    pub fn note_issued(&self, key: &PublicKey, serial: u64, issued: &str) -> Result<()> {
        self.tx
            .execute(
                "UPDATE rollback SET issued = ?3 WHERE pubkey = ?1 AND highest_serial = ?2",
                params![key.to_base64(), serial as i64, issued],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// Raise the rollback memory of a key; it never goes down.
    pub fn accept_serial(
        &self,
        key: &PublicKey,
        serial: u64,
        catalog_sha256: &str,
        expires: &str,
    ) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO rollback (pubkey, key_id, highest_serial, catalog_sha256, expires, accepted_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT(pubkey) DO UPDATE SET highest_serial = excluded.highest_serial, \
                 catalog_sha256 = excluded.catalog_sha256, expires = excluded.expires, accepted_at = excluded.accepted_at \
                 WHERE excluded.highest_serial >= rollback.highest_serial",
                params![key.to_base64(), key.key_id.to_string(), serial as i64, catalog_sha256, expires, now()],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// Insert or replace the row for an image.
    pub fn put_image(&self, row: &ImageRow) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO images (endorser, id, version, state, reason, decided_by, size, sha256, format, entry, store_path, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
                 ON CONFLICT(endorser, id, version) DO UPDATE SET state = excluded.state, reason = excluded.reason, \
                 decided_by = excluded.decided_by, size = excluded.size, sha256 = excluded.sha256, format = excluded.format, \
                 entry = excluded.entry, store_path = excluded.store_path, updated_at = excluded.updated_at",
                params![
                    row.endorser.as_str(),
                    row.id.as_str(),
                    row.version.as_str(),
                    row.state.as_str(),
                    row.reason,
                    row.decided_by.as_str(),
                    row.size as i64,
                    row.sha256.to_hex(),
                    row.format.as_str(),
                    row.entry,
                    row.store_path,
                    now()
                ],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// Change an image's state, reason, decider and store path.
    pub fn set_state(
        &self,
        row: &ImageRow,
        state: ImageState,
        reason: &str,
        decided_by: Decider,
        store_path: Option<&str>,
    ) -> Result<()> {
        self.tx
            .execute(
                "UPDATE images SET state = ?4, reason = ?5, decided_by = ?6, store_path = ?7, updated_at = ?8 \
                 WHERE endorser = ?1 AND id = ?2 AND version = ?3",
                params![
                    row.endorser.as_str(),
                    row.id.as_str(),
                    row.version.as_str(),
                    state.as_str(),
                    reason,
                    decided_by.as_str(),
                    store_path,
                    now()
                ],
            )
            .map(|_| ())
            .map_err(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{catalog, row};

    fn open() -> (tempfile::TempDir, State) {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(&dir.path().join("state.db"), true).unwrap();
        (dir, state)
    }

    #[test]
    fn image_rows_come_back_as_the_types_they_were_written_as() {
        let (_dir, mut state) = open();
        let c = catalog(&[("a", "1", b"one")], &[]);
        let written = row(&c, "a", "1", ImageState::Pending, Decider::Policy);
        let tx = state.transaction().unwrap();
        tx.put_image(&written).unwrap();
        tx.set_state(&written, ImageState::Approved, "ok", Decider::Manual, None)
            .unwrap();
        tx.commit().unwrap();
        let read = state.images_of("lab").unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].state, ImageState::Approved);
        assert_eq!(read[0].decided_by, Decider::Manual);
        assert_eq!(read[0].sha256, written.sha256);
        assert_eq!(read[0].image().unwrap(), c.images()[0]);
        assert!(state.images_of("other").unwrap().is_empty());
    }

    #[test]
    fn rollback_memory_never_goes_down() {
        let (_dir, mut state) = open();
        let key = vmic_format::minisign::SecretKey::generate()
            .unwrap()
            .public_key();
        let tx = state.transaction().unwrap();
        tx.accept_serial(&key, 5, "five", "2026-01-01T00:00:00Z")
            .unwrap();
        tx.accept_serial(&key, 3, "three", "2026-01-01T00:00:00Z")
            .unwrap();
        tx.commit().unwrap();
        let memory = state.serial(&key).unwrap().unwrap();
        assert_eq!(
            (memory.highest_serial, memory.catalog_sha256.as_str()),
            (5, "five")
        );
        let tx = state.transaction().unwrap();
        tx.accept_serial(&key, crate::catalog::MAX_IMAGES as u64, "big", "x")
            .unwrap();
        tx.accept_serial(&key, i64::MAX as u64, "max", "x").unwrap();
        tx.commit().unwrap();
        assert_eq!(
            state.serial(&key).unwrap().unwrap().highest_serial,
            i64::MAX as u64
        );
    }

    #[test]
    fn an_unknown_stored_value_is_a_corrupt_database_not_a_string() {
        let (dir, mut state) = open();
        let c = catalog(&[("a", "1", b"one")], &[]);
        let tx = state.transaction().unwrap();
        tx.put_image(&row(&c, "a", "1", ImageState::Pending, Decider::Policy))
            .unwrap();
        tx.commit().unwrap();
        let raw = Connection::open(dir.path().join("state.db")).unwrap();
        raw.execute("UPDATE images SET state = 'bogus'", [])
            .unwrap();
        let err = state.images().unwrap_err();
        assert!(err.message().contains("bogus"), "{err}");
        raw.execute("UPDATE images SET state = 'pending', id = '../x'", [])
            .unwrap();
        let err = state.images().unwrap_err();
        assert!(err.message().contains("../x"), "{err}");
    }

    #[test]
    fn a_version_1_database_is_migrated_with_its_rollback_memory_keyed_by_whole_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/state-db-v1/state.db");
        std::fs::copy(fixture, &path).unwrap();
        // Readers take an old database as it is.
        let ro = State::open_read_only(&path).unwrap();
        assert_eq!(ro.endorsers().unwrap().len(), 2);
        drop(ro);
        let state = State::open(&path, false).unwrap();
        for endorser in state.endorsers().unwrap() {
            let key = PublicKey::parse(&endorser.pubkey).unwrap();
            let memory = state.serial(&key).unwrap();
            assert_eq!(
                memory.map(|m| m.highest_serial),
                Some(1),
                "{}",
                endorser.name
            );
        }
        let version: i64 = state
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn a_read_only_open_cannot_write() {
        let (dir, state) = open();
        drop(state);
        let mut ro = State::open_read_only(&dir.path().join("state.db")).unwrap();
        assert!(ro.endorsers().unwrap().is_empty());
        let tx = ro.transaction().unwrap();
        assert!(tx.audit("x", None, None, "y").is_err());
        let missing = State::open_read_only(&dir.path().join("none.db"))
            .err()
            .unwrap();
        assert_eq!(missing.kind(), crate::error::ErrorKind::Input);
    }
}
