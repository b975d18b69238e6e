//! Virtual organisations (VMIC use cases 1.1–1.4): a site subscribes to a
//! VO's signed endorser list with the VO managers' keys and a threshold;
//! `sync` fetches and authenticates the list first (k of n signatures,
//! rollback, fork and expiry checks), then reconciles the site's endorsers
//! with it: new endorsers are trusted (or wait for `trust accept`), a key
//! the list changes is re-pinned (its memory reset when the list marks the
//! old key compromised), changed sources are applied, and removed endorsers
//! lose their images, or keep them when the VO says so. An endorser trusted
//! through several VOs, or also directly, stays until the last lets go.

use std::path::PathBuf;

use jiff::Timestamp;
use serde::Serialize;

use vmic_engine::fetch::HttpClient;
use vmic_engine::transport::Transport;
use vmic_engine::vo_source::{
    Newest, VoFiles, newest_authentic, open_vo_source, read_vo_candidates,
};
use vmic_format::digest::Sha256Digest;
use vmic_format::ids::EndorserName;
use vmic_format::minisign::PublicKey;
use vmic_format::vo::{AuthenticatedVo, MAX_VO_KEYS, RemovedImages, VoEndorser, VoList, VoRemoved};

use crate::error::{Error, ErrorKind, Result};
use crate::model::{ApproveMode, HookEvent, MemberStatus, StoredText};
use crate::site::Site;
use crate::state::{EndorserRow, MemberRow, VoMemory, VoRow, now};
use crate::store;
use crate::trust::{self, SerialMemory};

/// A request to support a VO.
pub struct VoAdd {
    /// The VO's name (as its list names it).
    pub name: String,
    /// The VO managers' public keys.
    pub pubkeys: Vec<PublicKey>,
    /// Signatures by distinct keys a list needs (default 1).
    pub threshold: Option<u32>,
    /// Where its list is published, tried in order.
    pub urls: Vec<String>,
    /// Extra CA certificates for those sources.
    pub ca_file: Option<PathBuf>,
    /// `auto`: endorsers it lists are trusted at once; `manual`: they wait
    /// for `vmic trust accept`.
    pub endorsers: ApproveMode,
}

/// Support a VO. Nothing is fetched until the next `sync`.
pub fn add(site: &mut Site, req: VoAdd) -> Result<VoRow> {
    let name = EndorserName::parse(&req.name).map_err(|e| Error::input(e.0))?;
    if site.state.vo(name.as_str())?.is_some() {
        return Err(Error::input(format!(
            "VO {name} is already supported; remove it first to change it"
        )));
    }
    let threshold = req.threshold.unwrap_or(1);
    check_keys(&req.pubkeys, threshold)?;
    if req.urls.is_empty() {
        return Err(Error::input("give at least one --url for the VO's list"));
    }
    let urls = req
        .urls
        .iter()
        .map(|u| trust::normalise_source(u))
        .collect::<Result<Vec<_>>>()?;
    let row = VoRow {
        name,
        pubkeys: req.pubkeys.iter().map(PublicKey::to_base64).collect(),
        threshold,
        urls,
        ca_file: req
            .ca_file
            .as_deref()
            .map(trust::absolute_ca_file)
            .transpose()?,
        endorsers: req.endorsers,
        added_at: now(),
        last_sync: None,
        last_error: None,
        reconciled_serial: None,
    };
    let tx = site.state.transaction()?;
    tx.add_vo(&row)?;
    let detail = format!(
        "{} of {} manager key(s) ({}) at {}; endorsers {}",
        threshold,
        req.pubkeys.len(),
        key_ids(&req.pubkeys),
        row.urls.join(", "),
        row.endorsers.as_str()
    );
    tx.audit("vo-added", Some(row.name.as_str()), None, &detail)?;
    tx.commit()?;
    Ok(row)
}

/// A threshold no set of keys can reach, or a key set with two keys under
/// one id (one could pass for the other), is refused.
fn check_keys(keys: &[PublicKey], threshold: u32) -> Result<()> {
    if keys.is_empty() || keys.len() > MAX_VO_KEYS {
        return Err(Error::input(format!(
            "give 1 to {MAX_VO_KEYS} VO manager keys (--pubkey)"
        )));
    }
    for (i, k) in keys.iter().enumerate() {
        if keys[..i].iter().any(|o| o.key_id == k.key_id) {
            return Err(Error::input(format!(
                "VO manager key {} is given twice (or two keys share its id)",
                k.key_id
            )));
        }
    }
    if threshold == 0 || threshold as usize > keys.len() {
        return Err(Error::input(format!(
            "--threshold {threshold} cannot be met by {} key(s)",
            keys.len()
        )));
    }
    Ok(())
}

fn key_ids(keys: &[PublicKey]) -> String {
    keys.iter()
        .map(|k| k.key_id.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `vo remove` did.
#[derive(Debug, Serialize)]
pub struct VoRemoval {
    /// The VO.
    pub name: String,
    /// Endorsers no longer trusted (their images withdrawn).
    pub removed: Vec<String>,
    /// Endorsers it listed that stay, trusted directly or through another VO.
    pub kept: Vec<String>,
}

/// Stop supporting a VO: the endorsers trusted only through it are
/// removed, their images withdrawn (VMIC use case 3.6 for a whole VO).
pub fn remove(site: &mut Site, name: &str) -> Result<VoRemoval> {
    if site.state.vo(name)?.is_none() {
        return Err(Error::input(format!(
            "{name} is not a supported VO (see `vmic vo list`)"
        )));
    }
    let mut outcome = VoRemoval {
        name: name.to_string(),
        removed: Vec::new(),
        kept: Vec::new(),
    };
    for member in site.state.members(Some(name))? {
        if !matches!(member.status, MemberStatus::Trusted | MemberStatus::Kept) {
            continue;
        }
        let endorser = member.name.as_str();
        if other_sources(site, endorser, name)? {
            outcome.kept.push(endorser.to_string());
        } else if site.state.endorser(endorser)?.is_some() {
            let reason = format!("this site no longer supports VO {name}");
            trust::remove_because(site, endorser, &reason)?;
            outcome.removed.push(endorser.to_string());
        }
    }
    let tx = site.state.transaction()?;
    tx.remove_vo(name)?;
    let detail = format!(
        "{} endorser(s) removed, {} still trusted otherwise",
        outcome.removed.len(),
        outcome.kept.len()
    );
    tx.audit("vo-removed", Some(name), None, &detail)?;
    tx.commit()?;
    Ok(outcome)
}

/// Whether `endorser` is trusted otherwise than through `vo`: directly, or
/// through another VO.
fn other_sources(site: &Site, endorser: &str, vo: &str) -> Result<bool> {
    let direct = site.state.endorser(endorser)?.is_some_and(|e| e.direct);
    let through_others = site.state.members(None)?.iter().any(|m| {
        m.name == *endorser
            && m.vo != vo
            && matches!(m.status, MemberStatus::Trusted | MemberStatus::Kept)
    });
    Ok(direct || through_others)
}

/// A supported VO with where its list stands, for `vo list`.
#[derive(Debug, Serialize)]
pub struct VoSummary {
    /// The stored VO.
    #[serde(flatten)]
    pub row: VoRow,
    /// The highest list serial accepted.
    pub serial: Option<u64>,
    /// That list's expiry.
    pub expires: Option<String>,
    /// What its list says about each endorser, and what the site made of it.
    pub members: Vec<MemberRow>,
}

/// Every supported VO.
pub fn summaries(site: &Site) -> Result<Vec<VoSummary>> {
    site.state
        .vos()?
        .into_iter()
        .map(|row| {
            let memory = site.state.vo_memory(row.name.as_str())?;
            Ok(VoSummary {
                members: site.state.members(Some(row.name.as_str()))?,
                serial: memory.as_ref().map(|m| m.highest_serial),
                expires: memory.map(|m| m.expires),
                row,
            })
        })
        .collect()
}

/// Trust an endorser a VO lists but this site has not taken yet (VMIC use
/// case 1.1.2: the VO's endorsers are accepted by hand), or one the
/// operator removed earlier.
pub fn accept(site: &mut Site, name: &str) -> Result<EndorserRow> {
    let waiting: Vec<MemberRow> = site
        .state
        .members(None)?
        .into_iter()
        .filter(|m| {
            m.name == *name && matches!(m.status, MemberStatus::Pending | MemberStatus::Declined)
        })
        .collect();
    let Some(first) = waiting.first() else {
        return Err(Error::input(format!(
            "{name} is not an endorser waiting to be accepted (see `vmic vo list`)"
        )));
    };
    if let Some(other) = waiting.iter().find(|m| m.pubkey != first.pubkey) {
        return Err(Error::verification(format!(
            "VOs {} and {} list endorser {name} with different keys; resolve it with the VOs before accepting",
            first.vo, other.vo
        )));
    }
    let key = PublicKey::parse(&first.pubkey)
        .map_err(|e| e.context(format!("key of {name} in VO {}", first.vo)))?;
    let row = match site.state.endorser(name)? {
        Some(row) if PublicKey::parse(&row.pubkey).is_ok_and(|k| k == key) => row,
        Some(row) => {
            return Err(Error::input(format!(
                "this site trusts {name} with key {} already, and VO {} lists key {}",
                row.key_id, first.vo, key.key_id
            )));
        }
        None => {
            let row = endorser_row(site, name, &key, &first.urls)?;
            trust::insert_endorser(site, &row, &key, &format!("trust accept, VO {}", first.vo))?;
            row
        }
    };
    let tx = site.state.transaction()?;
    tx.set_member_status(name, MemberStatus::Pending, MemberStatus::Trusted)?;
    tx.set_member_status(name, MemberStatus::Declined, MemberStatus::Trusted)?;
    tx.commit()?;
    Ok(row)
}

/// The endorser row for an endorser a VO lists.
fn endorser_row(site: &Site, name: &str, key: &PublicKey, urls: &[String]) -> Result<EndorserRow> {
    let (url, mirrors) = urls
        .split_first()
        .ok_or_else(|| Error::input(format!("endorser {name} has no catalog source")))?;
    Ok(EndorserRow {
        name: EndorserName::parse(name).map_err(|e| Error::input(e.0))?,
        pubkey: key.to_file_string(),
        key_id: key.key_id.to_string(),
        url: url.clone(),
        ca_file: None,
        approve: site.config.policy.approve,
        added_at: now(),
        last_sync: None,
        last_error: None,
        missing_since: None,
        gone_since: None,
        mirrors: mirrors.to_vec(),
        direct: false,
        retired: None,
        grace_secs: 0,
        last_success: None,
    })
}

/// What happened to one VO at a sync.
#[derive(Debug, Default, Serialize)]
pub struct VoReport {
    /// The VO.
    pub name: String,
    /// Nothing failed.
    pub ok: bool,
    /// The most severe failure, if any.
    pub failure: Option<ErrorKind>,
    /// What failed.
    pub error: Option<String>,
    /// The serial of the list read.
    pub serial: Option<u64>,
    /// The list was the one accepted before.
    pub unchanged: bool,
    /// What the list changed at this site.
    pub changes: Vec<String>,
    /// Endorsers waiting for `vmic trust accept`.
    pub pending: Vec<String>,
    /// Warnings (an entry not applied, a list close to expiry).
    pub warnings: Vec<String>,
    /// Endorsers to remove (name, reason) once the others have synced, so
    /// a replacement's images are in place before the old ones go (1.3).
    #[serde(skip)]
    pub leaving: Vec<(String, String)>,
    /// The list reconciled, remembered once the removals are done.
    #[serde(skip)]
    accepted: Option<(AuthenticatedVo, VoFiles)>,
}

/// Finish what the VO lists asked (after the sync of the other endorsers):
/// remove the endorsers they dropped, withdrawing their images unless
/// something else trusts them by now, then remember each list. A run that
/// stops earlier leaves the list unremembered, and the next run reconciles
/// it again.
pub fn finish_vos(site: &mut Site, reports: &mut [VoReport]) -> Result<()> {
    for report in reports.iter_mut() {
        for (name, reason) in std::mem::take(&mut report.leaving) {
            let tx = site.state.transaction()?;
            tx.delete_member(&report.name, &name)?;
            tx.commit()?;
            if site.state.endorser(&name)?.is_none() || other_sources(site, &name, &report.name)? {
                continue;
            }
            let removal = trust::remove_because(site, &name, &reason)?;
            report.changes.push(format!(
                "{reason}: {} image(s) withdrawn",
                removal.withdrawn.len()
            ));
        }
        if let Some((accepted, files)) = report.accepted.take() {
            remember_list(site, &report.name, &accepted)?;
            crate::store::keep_vo_list(site, &report.name, &files)?;
        }
    }
    Ok(())
}

/// Fetch, authenticate and apply every supported VO's list.
/// With `from`, each VO's list is read from that bundle (by the VO's name;
/// authenticated with the site's pinned manager keys) instead of its URLs.
pub fn sync_vos(
    site: &mut Site,
    (now, dry_run): (Timestamp, bool),
    from: Option<&std::path::Path>,
) -> Result<Vec<VoReport>> {
    let mut reports = Vec::new();
    for vo in site.state.vos()? {
        vmic_engine::cancel::check()?;
        let mut report = VoReport {
            name: vo.name.to_string(),
            ..Default::default()
        };
        if let Err(e) = sync_vo(site, &vo, (now, dry_run, from), &mut report) {
            report.failure = Some(e.kind());
            report.error = Some(format!("VO {}: {}", vo.name, e.message()));
        }
        report.ok = report.failure.is_none();
        if !dry_run {
            let tx = site.state.transaction()?;
            tx.record_vo_sync(vo.name.as_str(), report.error.as_deref())?;
            if let Some(error) = &report.error {
                tx.audit("vo-sync-failed", Some(vo.name.as_str()), None, error)?;
            }
            tx.commit()?;
        }
        reports.push(report);
    }
    Ok(reports)
}

fn sync_vo(
    site: &mut Site,
    vo: &VoRow,
    (now, dry_run, from): (Timestamp, bool, Option<&std::path::Path>),
    report: &mut VoReport,
) -> Result<()> {
    let urls = match from {
        None => vo.urls.clone(),
        Some(bundle) => match crate::bundle::vo_source_for(bundle, vo.name.as_str())? {
            Some(dir) => vec![dir.display().to_string()],
            None => {
                report.warnings.push(format!(
                    "VO {}: not in bundle {}; its list is not read",
                    vo.name,
                    bundle.display()
                ));
                return Ok(());
            }
        },
    };
    let keys = vo
        .pubkeys
        .iter()
        .map(|k| PublicKey::parse(k))
        .collect::<Result<Vec<_>>>()?;
    let client = crate::sync::http_client(site, vo.ca_file.as_ref())?;
    let pins = Pins {
        keys: &keys,
        threshold: vo.threshold,
        known: site
            .state
            .vo_memory(vo.name.as_str())?
            .and_then(|m| Sha256Digest::from_hex(&m.list_sha256)),
    };
    let (fetched, files, rotated_keys) = fetch_list((vo, &urls), &pins, &client, report)?;
    let list = &fetched.list;
    report.serial = Some(list.serial.get());
    if list.vo != vo.name {
        return Err(Error::verification(format!(
            "the list fetched is VO {}'s, not {}'s (signed by the same managers?); refused",
            list.vo, vo.name
        )));
    }
    let memory = site.state.vo_memory(vo.name.as_str())?;
    if let Err(refused) = check_history(memory.as_ref(), &fetched) {
        if !dry_run && refused.kind() == ErrorKind::Verification {
            let tx = site.state.transaction()?;
            let message = format!("VO {}: {}", vo.name, refused.message());
            store::endorser_event(
                &tx,
                "vo-refused",
                HookEvent::CatalogRefused,
                vo.name.as_str(),
                &message,
            )?;
            tx.commit()?;
        }
        return Err(refused);
    }
    // Unchanged: the list accepted before, and the endorsers reconciled
    // with it (a VO removed and added again is reconciled again).
    let serial = list.serial.get();
    if memory.as_ref().is_some_and(|m| m.highest_serial == serial)
        && vo.reconciled_serial == Some(serial)
    {
        report.unchanged = true;
    }
    if list.is_expired_at(now) {
        return Err(Error::verification(format!(
            "its list (serial {}) expired at {}; no change from it is applied until the VO re-signs it",
            list.serial, list.expires
        )));
    }
    warn_if_expiring(site, vo, list, (now, dry_run), report)?;
    if dry_run {
        return Ok(());
    }
    if let Some(new_keys) = rotated_keys {
        repin_managers(site, vo, &keys, &new_keys, report)?;
    }
    if report.unchanged {
        return Ok(());
    }
    reconcile(site, vo, list, report)?;
    report.accepted = Some((fetched, files));
    Ok(())
}

/// The list is accepted: its serial and hash become the rollback memory.
fn remember_list(site: &mut Site, vo: &str, fetched: &AuthenticatedVo) -> Result<()> {
    let list = &fetched.list;
    let signers: Vec<String> = fetched.signed_by.iter().map(ToString::to_string).collect();
    let tx = site.state.transaction()?;
    tx.accept_vo_serial(
        vo,
        &VoMemory {
            highest_serial: list.serial.get(),
            list_sha256: fetched.sha256.to_hex(),
            expires: list.expires.to_string(),
        },
    )?;
    let detail = format!(
        "list serial {} signed by {}",
        list.serial,
        signers.join(", ")
    );
    tx.audit("vo-accepted", Some(vo), None, &detail)?;
    tx.commit()
}

/// VO managers rotated their keys (statements signed by old and new key):
/// the site pins the new ones, logs it and tells the hooks.
fn repin_managers(
    site: &mut Site,
    vo: &VoRow,
    old: &[PublicKey],
    new: &[PublicKey],
    report: &mut VoReport,
) -> Result<()> {
    let steps: Vec<String> = old
        .iter()
        .zip(new)
        .filter(|(o, n)| o != n)
        .map(|(o, n)| format!("{} -> {}", o.key_id, n.key_id))
        .collect();
    let reason = format!(
        "VO {}: manager key(s) rotated by signed statements: {}",
        vo.name,
        steps.join(", ")
    );
    let tx = site.state.transaction()?;
    let keys: Vec<String> = new.iter().map(PublicKey::to_base64).collect();
    tx.set_vo_keys(vo.name.as_str(), &keys)?;
    store::endorser_event(
        &tx,
        "vo-key-rotated",
        HookEvent::KeyRotated,
        vo.name.as_str(),
        &reason,
    )?;
    tx.commit()?;
    report.changes.push(reason);
    Ok(())
}

/// A list close to its expiry: a warning at every run, the `expiring`
/// hook once per list.
fn warn_if_expiring(
    site: &mut Site,
    vo: &VoRow,
    list: &VoList,
    (now, dry_run): (Timestamp, bool),
    report: &mut VoReport,
) -> Result<()> {
    let window = site.config.policy.expiry_warning.0;
    if list.expires.as_second() - now.as_second() >= window as i64 {
        return Ok(());
    }
    let warning = format!(
        "VO {}'s list (serial {}) expires at {}: its managers should re-sign it",
        vo.name, list.serial, list.expires
    );
    if !dry_run {
        let tx = site.state.transaction()?;
        if tx.announce_vo_expiry(vo.name.as_str(), list.serial.get())? {
            store::endorser_event(
                &tx,
                "vo-expiring",
                HookEvent::Expiring,
                vo.name.as_str(),
                &warning,
            )?;
        }
        tx.commit()?;
    }
    report.warnings.push(warning);
    Ok(())
}

/// Rollback, same-serial replacement and fork, as for catalogs.
fn check_history(memory: Option<&VoMemory>, fetched: &AuthenticatedVo) -> Result<()> {
    let Some(memory) = memory else {
        return Ok(());
    };
    let serial = fetched.list.serial.get();
    let sha = fetched.sha256.to_hex();
    if serial < memory.highest_serial {
        return Err(Error::verification(format!(
            "rollback refused: list serial {serial} is older than serial {} accepted before",
            memory.highest_serial
        )));
    }
    if serial == memory.highest_serial && sha != memory.list_sha256 {
        return Err(Error::verification(format!(
            "two different lists carry serial {serial} (sha256 {} accepted, {sha} now): a forked history, a sign of a compromised VO key",
            memory.list_sha256
        )));
    }
    let previous = fetched.list.previous_sha256.map(|p| p.to_hex());
    if serial == memory.highest_serial + 1
        && previous.as_ref().is_some_and(|p| *p != memory.list_sha256)
    {
        return Err(Error::verification(format!(
            "list serial {serial} names predecessor {} but serial {} accepted here was {}: a forked history, a sign of a compromised VO key",
            previous.unwrap_or_default(),
            memory.highest_serial,
            memory.list_sha256
        )));
    }
    Ok(())
}

/// Read the list and every signature a pinned key may have made from the
/// first source that yields a list meeting the threshold; a source that
/// fails or serves bad bytes moves on to the next.
fn fetch_list(
    (vo, urls): (&VoRow, &[String]),
    pins: &Pins,
    client: &HttpClient,
    report: &mut VoReport,
) -> Result<FetchedList> {
    let mut errors: Vec<Error> = Vec::new();
    for url in urls {
        let attempt = open_vo_source(url, client).and_then(|t| read_rotated(&*t, pins));
        match attempt {
            Ok(list) => {
                // Sources passed over are worth knowing about (one may
                // serve a forged or stale list).
                for (source, e) in urls.iter().zip(&errors) {
                    report.warnings.push(format!(
                        "VO {}: source {source} passed over: {}",
                        vo.name,
                        e.message()
                    ));
                }
                return Ok(list);
            }
            Err(e) => errors.push(e),
        }
    }
    Err(crate::sync::combined(&errors))
}

/// An authenticated list, and the managers' keys after the rotations
/// followed to reach the threshold (`None`: the pinned keys served).
type FetchedList = (AuthenticatedVo, VoFiles, Option<Vec<PublicKey>>);

/// What a site trusts a VO's list by: the managers' keys, how many must
/// sign, and the hash of the list it accepted last (still a candidate).
struct Pins<'a> {
    keys: &'a [PublicKey],
    threshold: u32,
    known: Option<Sha256Digest>,
}

/// The list under the pinned keys; short of the threshold, under the keys
/// the managers rotated to by statements both keys signed.
fn read_rotated(transport: &dyn Transport, pins: &Pins) -> Result<FetchedList> {
    let keys = pins.keys;
    let (refused, held) = match read_list(transport, pins) {
        Ok(newest) if !newest.newer_refused => return Ok((newest.list, newest.files, None)),
        // A newer list the pinned keys do not carry: perhaps rotated keys do.
        Ok(newest) => (None, Some(newest)),
        Err(e) if e.kind() == ErrorKind::Verification => (Some(e), None),
        Err(e) => return Err(e),
    };
    let fallback = |refused: Option<Error>, held: Option<Newest>| match (held, refused) {
        (Some(held), _) => Ok((held.list, held.files, None)),
        (None, Some(e)) => Err(e),
        (None, None) => Err(Error::absent("no VO list found")),
    };
    let mut rotated = false;
    let mut effective = Vec::with_capacity(keys.len());
    for key in keys {
        let chain = vmic_engine::rotation_chain::follow_to_end(
            &vmic_engine::rotation_chain::TransportFiles(transport),
            key,
        )?;
        rotated |= !chain.is_empty();
        effective.push(chain.last().cloned().unwrap_or_else(|| key.clone()));
    }
    if !rotated {
        return fallback(refused, held);
    }
    let rotated_pins = Pins {
        keys: &effective,
        threshold: pins.threshold,
        known: pins.known,
    };
    match read_list(transport, &rotated_pins) {
        Ok(newest)
            if held
                .as_ref()
                .is_none_or(|h| newest.list.list.serial > h.list.list.serial) =>
        {
            Ok((newest.list, newest.files, Some(effective)))
        }
        _ => fallback(refused, held),
    }
}

/// The newest list this source offers that meets the threshold.
fn read_list(transport: &dyn Transport, pins: &Pins) -> Result<Newest> {
    let candidates = read_vo_candidates(transport, pins.keys, pins.known.as_ref())?;
    newest_authentic(candidates, pins.keys, pins.threshold)
}

/// Bring the site's endorsers in line with an authenticated list.
fn reconcile(site: &mut Site, vo: &VoRow, list: &VoList, report: &mut VoReport) -> Result<()> {
    let members = site.state.members(Some(vo.name.as_str()))?;
    for entry in &list.endorsers {
        let before = members.iter().find(|m| m.name == entry.name);
        apply_listed(site, vo, entry, before, report)?;
    }
    for member in members
        .iter()
        .filter(|m| list.endorser(m.name.as_str()).is_none())
    {
        apply_unlisted(site, vo, member, list.removal(member.name.as_str()), report)?;
    }
    Ok(())
}

fn member(vo: &VoRow, entry: &VoEndorser, status: MemberStatus) -> MemberRow {
    MemberRow {
        vo: vo.name.to_string(),
        name: entry.name.clone(),
        pubkey: entry.pubkey.to_base64(),
        urls: entry.urls.iter().map(|u| u.as_str().to_string()).collect(),
        status,
        since: now(),
    }
}

fn put_member(site: &mut Site, row: &MemberRow) -> Result<()> {
    let tx = site.state.transaction()?;
    tx.put_member(row)?;
    tx.commit()
}

/// One endorser the list names.
fn apply_listed(
    site: &mut Site,
    vo: &VoRow,
    entry: &VoEndorser,
    before: Option<&MemberRow>,
    report: &mut VoReport,
) -> Result<()> {
    let status = before.map(|m| m.status);
    let name = entry.name.as_str();
    if status == Some(MemberStatus::Declined) {
        // The operator said no; the list's current data is kept for `trust accept`.
        return put_member(site, &member(vo, entry, MemberStatus::Declined));
    }
    match site.state.endorser(name)? {
        None if vo.endorsers == ApproveMode::Manual && status != Some(MemberStatus::Trusted) => {
            put_member(site, &member(vo, entry, MemberStatus::Pending))?;
            report.pending.push(name.to_string());
            if status != Some(MemberStatus::Pending) {
                let tx = site.state.transaction()?;
                let reason = format!(
                    "VO {} lists endorser {name} (key {}); trust it with `vmic trust accept {name}`",
                    vo.name, entry.pubkey.key_id
                );
                store::endorser_event(
                    &tx,
                    "vo-endorser-pending",
                    HookEvent::EndorserPending,
                    name,
                    &reason,
                )?;
                tx.commit()?;
            }
            Ok(())
        }
        None => trust_listed(site, vo, entry, report),
        Some(row) => update_listed(site, vo, entry, status, row, report),
    }
}

/// A new endorser from the list, trusted at once.
fn trust_listed(
    site: &mut Site,
    vo: &VoRow,
    entry: &VoEndorser,
    report: &mut VoReport,
) -> Result<()> {
    let name = entry.name.as_str();
    let urls: Vec<String> = entry.urls.iter().map(|u| u.as_str().to_string()).collect();
    if let Err(e) = trust::refuse_key_clash(site, &entry.name, &entry.pubkey) {
        report.warnings.push(format!(
            "VO {} lists {name}: {}; not applied",
            vo.name,
            e.message()
        ));
        return Ok(());
    }
    let row = endorser_row(site, name, &entry.pubkey, &urls)?;
    trust::insert_endorser(site, &row, &entry.pubkey, &format!("VO {}", vo.name))?;
    put_member(site, &member(vo, entry, MemberStatus::Trusted))?;
    report
        .changes
        .push(format!("trusted {name} (key {})", entry.pubkey.key_id));
    Ok(())
}

/// An endorser the list names and this site trusts already: the list may
/// have changed its key or its sources, or named it again after a removal.
fn update_listed(
    site: &mut Site,
    vo: &VoRow,
    entry: &VoEndorser,
    status: Option<MemberStatus>,
    mut row: EndorserRow,
    report: &mut VoReport,
) -> Result<()> {
    let name = entry.name.as_str();
    let current = PublicKey::parse(&row.pubkey)?;
    let member_here = matches!(status, Some(MemberStatus::Trusted | MemberStatus::Kept));
    if current != entry.pubkey && is_former_key(site, name, entry, &current)? {
        report.warnings.push(format!(
            "VO {} lists key {} for {name}, which it rotated away from (to {}); not applied: the VO should update its list",
            vo.name, entry.pubkey.key_id, current.key_id
        ));
    } else if current != entry.pubkey {
        if !member_here {
            report.warnings.push(format!(
                "VO {} lists {name} with key {}, but this site trusts {name} with key {} (not through this VO); not applied",
                vo.name, entry.pubkey.key_id, current.key_id
            ));
            return Ok(());
        }
        repin(site, vo, entry, &current, report)?;
        row = site
            .state
            .endorser(name)?
            .ok_or_else(|| Error::input(format!("{name} vanished")))?;
    }
    let urls: Vec<String> = entry.urls.iter().map(|u| u.as_str().to_string()).collect();
    let sources: Vec<String> = row.sources().map(String::from).collect();
    let mut changed = Vec::new();
    if member_here && !row.direct && sources != urls {
        changed.push(format!(
            "sources {} -> {}",
            sources.join(", "),
            urls.join(", ")
        ));
        row.url = urls[0].clone();
        row.mirrors = urls[1..].to_vec();
    }
    if row.retired.take().is_some() {
        changed.push("listed again: synced again".to_string());
    }
    if !changed.is_empty() {
        let tx = site.state.transaction()?;
        tx.update_endorser(&row)?;
        let detail = format!("VO {}: {}", vo.name, changed.join("; "));
        tx.audit("vo-endorser-updated", Some(name), None, &detail)?;
        tx.commit()?;
        report
            .changes
            .push(format!("{name}: {}", changed.join("; ")));
    }
    put_member(site, &member(vo, entry, MemberStatus::Trusted))
}

/// Whether the list names a key the endorser has left (a list older than
/// the endorser's rotation), and does not declare the current one
/// compromised: then the list is stale, not a re-pin.
fn is_former_key(site: &Site, name: &str, entry: &VoEndorser, current: &PublicKey) -> Result<bool> {
    let listed = entry.pubkey.to_base64();
    let former = site.state.former_keys(name)?.contains(&listed);
    Ok(former && !entry.compromised.contains(current))
}

/// The VO re-pins an endorser's key: its history carries over, unless the
/// list marks the old key compromised (then the memory an attacker may
/// have pushed up is reset).
fn repin(
    site: &mut Site,
    vo: &VoRow,
    entry: &VoEndorser,
    current: &PublicKey,
    report: &mut VoReport,
) -> Result<()> {
    let name = entry.name.as_str();
    let compromised = entry.compromised.contains(current);
    let memory = if compromised {
        SerialMemory::Reset
    } else {
        SerialMemory::Carry
    };
    trust::rekey(site, name, entry.pubkey.clone(), memory)?;
    let (event, what) = if compromised {
        (
            HookEvent::KeyCompromised,
            "declared compromised; rollback memory reset",
        )
    } else {
        (
            HookEvent::KeyRotated,
            "replaced; rollback memory carried over",
        )
    };
    let reason = format!(
        "VO {}: key {} of {name} {what}; new key {}",
        vo.name, current.key_id, entry.pubkey.key_id
    );
    let tx = site.state.transaction()?;
    store::endorser_event(&tx, event.as_str(), event, name, &reason)?;
    tx.commit()?;
    report.changes.push(reason);
    Ok(())
}

/// An endorser the VO listed before and lists no more.
fn apply_unlisted(
    site: &mut Site,
    vo: &VoRow,
    before: &MemberRow,
    removal: Option<&VoRemoved>,
    report: &mut VoReport,
) -> Result<()> {
    let name = before.name.as_str();
    let vo_name = vo.name.as_str();
    let forget = |site: &mut Site| -> Result<()> {
        let tx = site.state.transaction()?;
        tx.delete_member(vo_name, name)?;
        tx.commit()
    };
    if !matches!(before.status, MemberStatus::Trusted | MemberStatus::Kept) {
        return forget(site);
    }
    if other_sources(site, name, vo_name)? {
        forget(site)?;
        report
            .changes
            .push(format!("{name} left VO {vo_name}; still trusted otherwise"));
        return Ok(());
    }
    let reason = match removal {
        Some(r) => format!("VO {vo_name} removed endorser {name}: {}", r.reason),
        None => format!("VO {vo_name} no longer lists endorser {name}"),
    };
    // "keep" holds only for the key the site trusts: the VO kept that
    // endorser's images, not whatever another key signed under its name.
    let keep = removal
        .is_some_and(|r| r.images == RemovedImages::Keep && r.pubkey.to_base64() == before.pubkey);
    if keep {
        return retire(site, before, &reason, report);
    }
    // Removed once the other endorsers have synced (`finish_vos`).
    report.leaving.push((name.to_string(), reason));
    Ok(())
}

/// Use case 1.2.2: no new images from this endorser, the ones here stay.
fn retire(site: &mut Site, before: &MemberRow, reason: &str, report: &mut VoReport) -> Result<()> {
    let name = before.name.as_str();
    let mut kept = before.clone();
    kept.status = MemberStatus::Kept;
    put_member(site, &kept)?;
    let Some(mut row) = site.state.endorser(name)? else {
        return Ok(());
    };
    if row.retired.is_some() {
        return Ok(());
    }
    row.retired = Some(reason.to_string());
    let tx = site.state.transaction()?;
    tx.update_endorser(&row)?;
    let detail = format!("{reason}; its images are kept, no new ones are taken");
    store::endorser_event(
        &tx,
        "vo-endorser-retired",
        HookEvent::EndorserRemoved,
        name,
        &detail,
    )?;
    tx.commit()?;
    report.changes.push(detail);
    Ok(())
}
