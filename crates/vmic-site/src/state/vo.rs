//! The VO tables of the site database (schema 5): subscribed VOs, the
//! rollback memory of their lists, and what each list says about each
//! endorser. A database older than schema 5, read as it is, has no VOs.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use vmic_format::ids::{EndorserName, InvalidValue};
use vmic_format::minisign::PublicKey;

use super::{State, Tx, parsed, split_lines, sql};
use crate::error::Result;
use crate::model::{ApproveMode, MemberStatus, StoredText};

/// A VO this site supports.
#[derive(Clone, Debug, Serialize)]
pub struct VoRow {
    /// The VO's name.
    pub name: EndorserName,
    /// The VO managers' whole keys (minisign base64 lines).
    pub pubkeys: Vec<String>,
    /// Signatures by distinct keys of `pubkeys` a list needs.
    pub threshold: u32,
    /// Where its list is published, tried in order.
    pub urls: Vec<String>,
    /// Extra CA certificates for those sources.
    pub ca_file: Option<String>,
    /// Whether endorsers it lists are trusted at once or wait for `trust accept`.
    pub endorsers: ApproveMode,
    /// When it was added.
    pub added_at: String,
    /// When its list was last fetched.
    pub last_sync: Option<String>,
    /// What failed then, if anything.
    pub last_error: Option<String>,
    /// The list serial the site's endorsers were last reconciled with.
    pub reconciled_serial: Option<u64>,
}

/// The rollback memory of a VO's list.
#[derive(Clone, Debug, Serialize)]
pub struct VoMemory {
    /// Highest serial accepted.
    pub highest_serial: u64,
    /// SHA-256 of that list.
    pub list_sha256: String,
    /// Its expiry.
    pub expires: String,
}

/// What a VO's list says about one endorser, and what the site made of it.
#[derive(Clone, Debug, Serialize)]
pub struct MemberRow {
    /// The VO.
    pub vo: String,
    /// The endorser.
    pub name: EndorserName,
    /// Its key as the list gives it (base64 line).
    pub pubkey: String,
    /// Its catalog sources as the list gives them.
    pub urls: Vec<String>,
    /// Where it stands here.
    pub status: MemberStatus,
    /// Since when.
    pub since: String,
}

impl MemberRow {
    /// The status as `vo list` prints it.
    pub fn status_text(&self) -> &'static str {
        self.status.as_str()
    }
}

impl State {
    /// Every VO this site supports.
    pub fn vos(&self) -> Result<Vec<VoRow>> {
        if self.version < 5 {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT name, pubkeys, threshold, urls, ca_file, endorsers, added_at, last_sync, last_error, reconciled_serial FROM vos ORDER BY name")
            .map_err(sql)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(VoRow {
                    name: parsed(r, 0, EndorserName::parse)?,
                    pubkeys: split_lines(&r.get::<_, String>(1)?),
                    threshold: r.get(2)?,
                    urls: split_lines(&r.get::<_, String>(3)?),
                    ca_file: r.get(4)?,
                    endorsers: parsed(r, 5, |t| {
                        ApproveMode::parse(t).map_err(|e| InvalidValue(e.message().into()))
                    })?,
                    added_at: r.get(6)?,
                    last_sync: r.get(7)?,
                    last_error: r.get(8)?,
                    reconciled_serial: r.get::<_, Option<i64>>(9)?.map(|s| s as u64),
                })
            })
            .map_err(sql)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql)
    }

    /// The VO called `name`.
    pub fn vo(&self, name: &str) -> Result<Option<VoRow>> {
        Ok(self.vos()?.into_iter().find(|v| v.name == *name))
    }

    /// The rollback memory of VO `name`'s list.
    pub fn vo_memory(&self, name: &str) -> Result<Option<VoMemory>> {
        if self.version < 5 {
            return Ok(None);
        }
        self.conn
            .query_row(
                "SELECT highest_serial, list_sha256, expires FROM vo_rollback WHERE vo = ?1",
                params![name],
                |r| {
                    Ok(VoMemory {
                        highest_serial: r.get::<_, i64>(0)? as u64,
                        list_sha256: r.get(1)?,
                        expires: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(sql)
    }

    /// What the VOs' lists say about endorsers: all rows, or one VO's.
    pub fn members(&self, vo: Option<&str>) -> Result<Vec<MemberRow>> {
        if self.version < 5 {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT vo, name, pubkey, urls, status, since FROM vo_endorsers WHERE ?1 IS NULL OR vo = ?1 ORDER BY vo, name")
            .map_err(sql)?;
        let rows = stmt
            .query_map(params![vo], |r| {
                Ok(MemberRow {
                    vo: r.get(0)?,
                    name: parsed(r, 1, EndorserName::parse)?,
                    pubkey: r.get(2)?,
                    urls: split_lines(&r.get::<_, String>(3)?),
                    status: parsed(r, 4, |t| {
                        MemberStatus::from_stored(t)
                            .ok_or_else(|| InvalidValue(format!("member status {t:?}")))
                    })?,
                    since: r.get(5)?,
                })
            })
            .map_err(sql)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql)
    }
}

impl State {
    /// The keys `endorser` was re-pinned away from (base64 lines).
    pub fn former_keys(&self, endorser: &str) -> Result<Vec<String>> {
        if self.version < 5 {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT pubkey FROM key_history WHERE endorser = ?1 ORDER BY at")
            .map_err(sql)?;
        let rows = stmt
            .query_map(params![endorser], |r| r.get(0))
            .map_err(sql)?;
        rows.collect::<rusqlite::Result<Vec<String>>>().map_err(sql)
    }
}

impl State {
    /// The sources of `endorser` known to be unhealthy at `now`.
    pub fn unhealthy_sources(&self, endorser: &str, now: &str) -> Result<Vec<String>> {
        if self.version < 5 {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT source FROM source_health WHERE endorser = ?1 AND until > ?2")
            .map_err(sql)?;
        let rows = stmt
            .query_map(params![endorser, now], |r| r.get(0))
            .map_err(sql)?;
        rows.collect::<rusqlite::Result<Vec<String>>>().map_err(sql)
    }
}

impl Tx<'_> {
    /// `source` of `endorser` failed: try it after the others until `until`.
    pub fn mark_source_unhealthy(
        &self,
        endorser: &str,
        source: &str,
        until: &str,
        error: &str,
    ) -> Result<()> {
        self.tx
            .execute(
                "INSERT OR REPLACE INTO source_health (endorser, source, until, error) VALUES (?1, ?2, ?3, ?4)",
                params![endorser, source, until, error],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// `source` of `endorser` served a good catalog.
    pub fn mark_source_healthy(&self, endorser: &str, source: &str) -> Result<()> {
        self.tx
            .execute(
                "DELETE FROM source_health WHERE endorser = ?1 AND source = ?2",
                params![endorser, source],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// Remember that `endorser` left key `from` for `to`.
    pub fn record_key_change(
        &self,
        endorser: &str,
        from: &PublicKey,
        to: &PublicKey,
    ) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO key_history (endorser, pubkey, replaced_by, at) VALUES (?1, ?2, ?3, ?4)",
                params![endorser, from.to_base64(), to.to_base64(), super::now()],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// Support a new VO; an existing name is refused.
    pub fn add_vo(&self, vo: &VoRow) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO vos (name, pubkeys, threshold, urls, ca_file, endorsers, added_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    vo.name.as_str(),
                    vo.pubkeys.join("\n"),
                    vo.threshold,
                    vo.urls.join("\n"),
                    vo.ca_file,
                    vo.endorsers.as_str(),
                    vo.added_at
                ],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// Stop supporting a VO: its row and what its list said go; the
    /// rollback memory of its list stays.
    pub fn remove_vo(&self, name: &str) -> Result<()> {
        self.tx
            .execute("DELETE FROM vo_endorsers WHERE vo = ?1", params![name])
            .and_then(|_| {
                self.tx
                    .execute("DELETE FROM vos WHERE name = ?1", params![name])
            })
            .map(|_| ())
            .map_err(sql)
    }

    /// Pin other manager keys for a VO (after their rotation).
    pub fn set_vo_keys(&self, name: &str, pubkeys: &[String]) -> Result<()> {
        self.tx
            .execute(
                "UPDATE vos SET pubkeys = ?2 WHERE name = ?1",
                params![name, pubkeys.join("\n")],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// Note that VO `name`'s list at `serial` was announced as expiring;
    /// true the first time only.
    pub fn announce_vo_expiry(&self, name: &str, serial: u64) -> Result<bool> {
        self.tx
            .execute(
                "UPDATE vos SET expiry_warned_serial = ?2 WHERE name = ?1 \
                 AND (expiry_warned_serial IS NULL OR expiry_warned_serial <> ?2)",
                params![name, serial as i64],
            )
            .map(|changed| changed > 0)
            .map_err(sql)
    }

    /// Record how fetching a VO's list went.
    pub fn record_vo_sync(&self, name: &str, error: Option<&str>) -> Result<()> {
        self.tx
            .execute(
                "UPDATE vos SET last_sync = ?2, last_error = ?3 WHERE name = ?1",
                params![name, super::now(), error],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// Raise the rollback memory of a VO's list (it never goes down), and
    /// note that the site's endorsers are reconciled with that list.
    pub fn accept_vo_serial(&self, name: &str, memory: &VoMemory) -> Result<()> {
        self.tx
            .execute(
                "UPDATE vos SET reconciled_serial = ?2 WHERE name = ?1",
                params![name, memory.highest_serial as i64],
            )
            .map_err(sql)?;
        self.tx
            .execute(
                "INSERT INTO vo_rollback (vo, highest_serial, list_sha256, expires, accepted_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT(vo) DO UPDATE SET highest_serial = excluded.highest_serial, list_sha256 = excluded.list_sha256, \
                 expires = excluded.expires, accepted_at = excluded.accepted_at WHERE excluded.highest_serial >= vo_rollback.highest_serial",
                params![name, memory.highest_serial as i64, memory.list_sha256, memory.expires, super::now()],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// Insert or replace what a VO's list says about an endorser.
    pub fn put_member(&self, m: &MemberRow) -> Result<()> {
        self.tx
            .execute(
                "INSERT OR REPLACE INTO vo_endorsers (vo, name, pubkey, urls, status, since) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![m.vo, m.name.as_str(), m.pubkey, m.urls.join("\n"), m.status.as_str(), m.since],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// Forget what VO `vo` said about `name`.
    pub fn delete_member(&self, vo: &str, name: &str) -> Result<()> {
        self.tx
            .execute(
                "DELETE FROM vo_endorsers WHERE vo = ?1 AND name = ?2",
                params![vo, name],
            )
            .map(|_| ())
            .map_err(sql)
    }

    /// Set the status of every VO row about `name` that has status `from`.
    pub fn set_member_status(
        &self,
        name: &str,
        from: MemberStatus,
        to: MemberStatus,
    ) -> Result<()> {
        self.tx
            .execute(
                "UPDATE vo_endorsers SET status = ?3, since = ?4 WHERE name = ?1 AND status = ?2",
                params![name, from.as_str(), to.as_str(), super::now()],
            )
            .map(|_| ())
            .map_err(sql)
    }
}
