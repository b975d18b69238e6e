//! The audit log as evidence. Every entry records who acted (the user) and
//! what command, and carries the SHA-256 of the entry before it: entry n's
//! `hash` is SHA-256 of `prev_hash` and the canonical JSON of its fields
//! (seq, at, action, endorser, image, detail, actor, command), and its
//! `prev_hash` is entry n−1's `hash`. Sequence numbers are consecutive.
//!
//! So an entry altered, deleted from the middle, or moved shows as a broken
//! link (`vmic log --verify`, exit 1), even after the SQLite triggers that
//! forbid it are dropped. Deleting the newest entries is caught by the head
//! (`audit.head` next to `state.db`, rewritten after every commit), and,
//! against someone who can rewrite that file and recompute the whole chain,
//! by a head kept elsewhere (`vmic log --head` prints it; `--verify
//! --anchor SEQ:HASH` checks against it). Entries written before schema 6
//! carry no hash; they are counted, not chained.

use std::path::Path;

use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;

use vmic_format::digest::Sha256Digest;

use super::{AuditRow, State, sql};
use crate::error::Result;

/// The first entry's `prev_hash`.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who is acting, for every entry written: the user and the command line.
#[derive(Clone, Debug, Default)]
pub struct Actor {
    /// The user (`alice`, or `root (sudo by alice)`).
    pub user: String,
    /// The command as run (`vmic sync --json`).
    pub command: String,
}

/// The newest entry: its sequence number and hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Head {
    /// Sequence number.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
}

impl Head {
    /// `SEQ:HASH`, as `vmic log --head` prints it.
    pub fn parse(text: &str) -> Option<Head> {
        let (seq, hash) = text.trim().split_once(':')?;
        let hash = Sha256Digest::from_hex(hash)?.to_hex();
        Some(Head {
            seq: seq.parse().ok()?,
            hash,
        })
    }
}

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

/// What `vmic log --verify` found.
#[derive(Debug, Serialize)]
pub struct LogCheck {
    /// Entries in the log.
    pub entries: usize,
    /// Entries from before the chain (schema < 6), not checkable.
    pub unchained: usize,
    /// The newest entry, if chained.
    pub head: Option<Head>,
    /// Every break found, oldest first; empty means intact.
    pub problems: Vec<String>,
}

/// The hash of an entry, from its predecessor's hash and its fields.
fn entry_hash(prev: &str, row: &AuditRow) -> String {
    let fields = serde_json::json!([
        row.seq,
        row.at,
        row.action,
        row.endorser,
        row.image,
        row.detail,
        row.actor,
        row.command
    ]);
    let mut bytes = prev.as_bytes().to_vec();
    bytes.push(b'\n');
    bytes.extend_from_slice(fields.to_string().as_bytes());
    Sha256Digest::of(&bytes).to_hex()
}

/// Append one entry, chained to the newest; returns the new head.
pub(super) fn append(
    tx: &Transaction,
    actor: &Actor,
    (action, endorser, image, detail): (&str, Option<&str>, Option<&str>, &str),
) -> Result<Head> {
    // The next number AUTOINCREMENT would give: never reused, so entries
    // deleted at the end show as a gap before the next one.
    let last_seq: i64 = tx
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'audit'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql)?
        .unwrap_or(0);
    let prev: Option<String> = tx
        .query_row(
            "SELECT hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql)?
        .flatten();
    let prev = prev.unwrap_or_else(|| GENESIS.to_string());
    let row = AuditRow {
        seq: last_seq + 1,
        at: super::now(),
        action: action.into(),
        endorser: endorser.map(String::from),
        image: image.map(String::from),
        detail: detail.into(),
        actor: actor.user.clone(),
        command: actor.command.clone(),
        hash: None,
    };
    let hash = entry_hash(&prev, &row);
    tx.execute(
        "INSERT INTO audit (seq, at, action, endorser, image, detail, actor, command, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            row.seq,
            row.at,
            row.action,
            row.endorser,
            row.image,
            row.detail,
            row.actor,
            row.command,
            prev,
            hash
        ],
    )
    .map_err(sql)?;
    Ok(Head { seq: row.seq, hash })
}

/// Where the head is kept: `audit.head` next to the database.
pub(super) fn head_path(db: &Path) -> std::path::PathBuf {
    db.with_file_name("audit.head")
}

/// Record the head after a commit (best effort: a crash before this leaves
/// the file one commit behind, which `verify` accepts as a prefix).
pub(super) fn write_head(path: &Path, head: &Head) {
    let _ = crate::fsutil::atomic_write(path, format!("{head}\n").as_bytes());
}

impl State {
    /// Walk the whole chain: every link, every hash, consecutive numbers,
    /// and the newest entry against each `anchor` (the kept head, or one
    /// the operator kept elsewhere), which must be in the log unchanged.
    pub fn verify_log(&self, anchors: &[(String, Head)]) -> Result<LogCheck> {
        let rows = self.audit()?;
        let mut check = LogCheck {
            entries: rows.len(),
            unchained: 0,
            head: None,
            problems: Vec::new(),
        };
        let prev_hashes = self.prev_hashes()?;
        let mut previous: Option<&AuditRow> = None;
        for (row, prev_hash) in rows.iter().zip(&prev_hashes) {
            let Some(hash) = &row.hash else {
                check.unchained += 1;
                if previous.is_some() {
                    check.problems.push(format!(
                        "entry {} has no hash after chained entries: it was inserted by hand",
                        row.seq
                    ));
                }
                continue;
            };
            check_link(previous, row, prev_hash.as_deref(), &mut check.problems);
            if entry_hash(prev_hash.as_deref().unwrap_or(GENESIS), row) != *hash {
                check.problems.push(format!(
                    "entry {} ({} at {}) was altered: its hash does not match its contents",
                    row.seq, row.action, row.at
                ));
            }
            previous = Some(row);
        }
        check.head = previous.map(|r| Head {
            seq: r.seq,
            hash: r.hash.clone().unwrap_or_default(),
        });
        for (origin, anchor) in anchors {
            check_anchor(&rows, origin, anchor, &mut check.problems);
        }
        Ok(check)
    }

    /// Each entry's stored `prev_hash`, in the order of [`State::audit`].
    fn prev_hashes(&self) -> Result<Vec<Option<String>>> {
        if self.version < 6 {
            return Ok(vec![None; self.audit()?.len()]);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT prev_hash FROM audit ORDER BY seq")
            .map_err(sql)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(sql)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql)
    }
}

/// The link from `previous` to `row`: consecutive numbers, and `row`
/// naming `previous`'s hash (the first chained entry names the genesis).
fn check_link(
    previous: Option<&AuditRow>,
    row: &AuditRow,
    prev_hash: Option<&str>,
    problems: &mut Vec<String>,
) {
    let expected = previous.and_then(|p| p.hash.as_deref()).unwrap_or(GENESIS);
    if let Some(p) = previous
        && row.seq != p.seq + 1
    {
        problems.push(format!(
            "entries {}..{} are missing (deleted) before entry {}",
            p.seq + 1,
            row.seq - 1,
            row.seq
        ));
    }
    if prev_hash != Some(expected) {
        problems.push(format!(
            "entry {} does not follow entry {}: an entry before it was deleted, altered or moved",
            row.seq,
            previous.map_or(0, |p| p.seq)
        ));
    }
}

/// The anchored entry must still be there, with the same hash.
fn check_anchor(rows: &[AuditRow], origin: &str, anchor: &Head, problems: &mut Vec<String>) {
    match rows.iter().find(|r| r.seq == anchor.seq) {
        Some(r) if r.hash.as_deref() == Some(anchor.hash.as_str()) => {}
        Some(r) => problems.push(format!(
            "entry {} differs from the head recorded in {origin} ({}): it was altered or the chain rewritten",
            r.seq, anchor.hash
        )),
        None => problems.push(format!(
            "entry {} recorded as the head in {origin} is gone: the newest entries were deleted",
            anchor.seq
        )),
    }
}

/// Entries matching every filter given.
#[derive(Clone, Debug, Default)]
pub struct LogFilter {
    /// At or after (RFC 3339 UTC, compared as text: vmic writes one form).
    pub since: Option<jiff::Timestamp>,
    /// Before.
    pub until: Option<jiff::Timestamp>,
    /// The action (`imported`, `quarantined`, …).
    pub event: Option<String>,
    /// The endorser.
    pub endorser: Option<String>,
    /// The image: `id` or `id@version`.
    pub image: Option<String>,
}

impl LogFilter {
    /// Whether `row` passes.
    pub fn keeps(&self, row: &AuditRow) -> bool {
        let at = row.at.parse::<jiff::Timestamp>().ok();
        let after = self.since.is_none_or(|s| at.is_some_and(|a| a >= s));
        let before = self.until.is_none_or(|u| at.is_some_and(|a| a < u));
        let event = self.event.as_ref().is_none_or(|e| row.action == *e);
        let endorser = self
            .endorser
            .as_ref()
            .is_none_or(|e| row.endorser.as_deref() == Some(e.as_str()));
        let image = self.image.as_ref().is_none_or(|wanted| {
            row.image.as_deref().is_some_and(|label| {
                label == wanted || label.split_once('@').is_some_and(|(id, _)| id == wanted)
            })
        });
        after && before && event && endorser && image
    }
}

/// Who runs this process: the login user, and who used sudo.
pub fn current_user() -> String {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let user = var("USER")
        .or_else(|| var("LOGNAME"))
        .unwrap_or_else(|| format!("uid {}", unsafe_free_uid()));
    match var("SUDO_USER") {
        Some(by) if by != user => format!("{user} (sudo by {by})"),
        _ => user,
    }
}

/// The real uid, read from `/proc/self/status` (no `unsafe` needed).
fn unsafe_free_uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().map(String::from))
        })
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_and_print_alike() {
        let head = Head {
            seq: 12,
            hash: Sha256Digest::of(b"x").to_hex(),
        };
        assert_eq!(Head::parse(&head.to_string()), Some(head));
        assert_eq!(Head::parse("12:nothex"), None);
    }

    #[test]
    fn filters_match_ids_and_labels_and_time_windows() {
        let row = AuditRow {
            seq: 1,
            at: "2026-12-01T10:00:00Z".into(),
            action: "imported".into(),
            endorser: Some("cern".into()),
            image: Some("os@2".into()),
            detail: String::new(),
            actor: String::new(),
            command: String::new(),
            hash: None,
        };
        let by_id = LogFilter {
            image: Some("os".into()),
            ..Default::default()
        };
        assert!(by_id.keeps(&row));
        let window = LogFilter {
            since: Some("2026-12-01T11:00:00Z".parse().unwrap()),
            ..Default::default()
        };
        assert!(!window.keeps(&row));
        let other = LogFilter {
            endorser: Some("desy".into()),
            ..Default::default()
        };
        assert!(!other.keeps(&row));
    }
}
