//! Trusting and distrusting endorsers (VMIC use cases 1.x and 3.6).

use serde::Serialize;

use crate::config::ApproveMode;
use crate::error::{Error, Result};
use crate::minisign::PublicKey;
use crate::site::Site;
use vmic_engine::transport::Location;
use vmic_format::ids::EndorserName;

use crate::model::{Decider, HookEvent, ImageState, MemberStatus};
use crate::state::{EndorserRow, now};
use crate::store;

/// A request to trust an endorser.
pub struct TrustAdd {
    /// The site's name for it.
    pub name: String,
    /// Its public key.
    pub pubkey: PublicKey,
    /// Where its catalog is published, tried in order (at least one).
    pub urls: Vec<String>,
    /// Extra CA certificates for that source.
    pub ca_file: Option<std::path::PathBuf>,
    /// Approval mode (default: the site policy's).
    pub approve: Option<ApproveMode>,
    /// Seconds its images stay after its catalog expired.
    pub grace_secs: u64,
}

/// Add an endorser: a validated name, its public key, where its catalog
/// lives, and how its images are approved.
pub fn add(site: &mut Site, req: TrustAdd) -> Result<EndorserRow> {
    let name = EndorserName::parse(&req.name).map_err(|e| Error::input(e.0))?;
    let key = req.pubkey;
    if let Some(existing) = site.state.endorser(name.as_str())? {
        return adopt_directly(site, existing, &key);
    }
    refuse_key_clash(site, &name, &key)?;
    let mut sources = req.urls.iter().map(|u| normalise_source(u));
    let url = sources
        .next()
        .ok_or_else(|| Error::input("give at least one --url"))??;
    let mirrors = sources.collect::<Result<Vec<_>>>()?;
    let ca_file = req.ca_file.as_deref().map(absolute_ca_file).transpose()?;
    let row = EndorserRow {
        name,
        pubkey: key.to_file_string(),
        key_id: key.key_id.to_string(),
        url,
        ca_file,
        approve: req.approve.unwrap_or(site.config.policy.approve),
        added_at: now(),
        last_sync: None,
        last_error: None,
        missing_since: None,
        gone_since: None,
        mirrors,
        direct: true,
        retired: None,
        grace_secs: req.grace_secs,
        last_success: None,
    };
    insert_endorser(site, &row, &key, "trust add")?;
    Ok(row)
}

/// Trust `row` (from `trust add`, a VO list or `trust accept`): the row,
/// the legacy memory of its key, a log entry and the `endorser-added` hook.
pub(crate) fn insert_endorser(
    site: &mut Site,
    row: &EndorserRow,
    key: &PublicKey,
    by: &str,
) -> Result<()> {
    let tx = site.state.transaction()?;
    tx.add_endorser(row)?;
    tx.adopt_legacy_serial(key)?;
    let detail = format!(
        "key {} at {} (approve {}; by {by})",
        row.key_id,
        row.sources().collect::<Vec<_>>().join(", "),
        row.approve.as_str()
    );
    let name = row.name.as_str();
    store::endorser_event(&tx, "trust-added", HookEvent::EndorserAdded, name, &detail)?;
    tx.commit()?;
    crate::hooks::flush_outbox(site).map(|_| ())
}

/// `trust add` of an endorser this site trusts through a VO already, with
/// the same key: it is now trusted directly too, and stays when the VO
/// lets go. Anything else under that name is refused.
fn adopt_directly(site: &mut Site, mut row: EndorserRow, key: &PublicKey) -> Result<EndorserRow> {
    let same_key = PublicKey::parse(&row.pubkey).is_ok_and(|k| k == *key);
    if row.direct || !same_key {
        return Err(Error::input(format!(
            "endorser {} is already trusted; remove it first to change it (or see `vmic trust edit`, `vmic trust rekey`)",
            row.name
        )));
    }
    row.direct = true;
    let tx = site.state.transaction()?;
    tx.update_endorser(&row)?;
    tx.audit(
        "trust-added",
        Some(row.name.as_str()),
        None,
        "trusted directly too (it stays when its VOs let go)",
    )?;
    tx.commit()?;
    Ok(row)
}

/// A CA file as `sync` will find it from any working directory.
pub(crate) fn absolute_ca_file(path: &std::path::Path) -> Result<String> {
    let abs = path
        .canonicalize()
        .map_err(|e| Error::io("read CA file", path, e))?;
    Ok(abs.display().to_string())
}

/// What to do with an endorser's extra CA certificates.
pub enum CaFileChange {
    /// Leave them as they are.
    Keep,
    /// Use this PEM file.
    Set(std::path::PathBuf),
    /// Use the system roots only.
    Clear,
}

/// A change to a trusted endorser's source or approval mode (VMIC use case
/// 1.5.2): its key, rollback memory, decisions and images stay as they are.
pub struct TrustEdit {
    /// The endorser.
    pub name: String,
    /// New sources, tried in order (empty: unchanged).
    pub urls: Vec<String>,
    /// Its CA certificates.
    pub ca_file: CaFileChange,
    /// A new approval mode for images decided from now on, if any.
    pub approve: Option<ApproveMode>,
    /// A new grace period after expiry, in seconds (0: none), if any.
    pub grace_secs: Option<u64>,
}

/// Change where an endorser's catalog is read from, or how its new images
/// are approved, without touching anything it has at this site. A new
/// source is no longer missing or gone.
pub fn edit(site: &mut Site, req: TrustEdit) -> Result<EndorserRow> {
    let Some(mut row) = site.state.endorser(&req.name)? else {
        return Err(Error::input(format!(
            "{} is not a trusted endorser (see `vmic trust list`)",
            req.name
        )));
    };
    let mut changes = Vec::new();
    if !req.urls.is_empty() {
        let mut sources = req
            .urls
            .iter()
            .map(|u| normalise_source(u))
            .collect::<Result<Vec<_>>>()?;
        let old = row.sources().collect::<Vec<_>>().join(", ");
        changes.push(format!("source {old} -> {}", sources.join(", ")));
        row.url = sources.remove(0);
        row.mirrors = sources;
        row.missing_since = None;
        row.gone_since = None;
    }
    match &req.ca_file {
        CaFileChange::Keep => {}
        CaFileChange::Set(path) => {
            let ca = absolute_ca_file(path)?;
            changes.push(format!("CA file {ca}"));
            row.ca_file = Some(ca);
        }
        CaFileChange::Clear => {
            changes.push("no CA file".into());
            row.ca_file = None;
        }
    }
    if let Some(approve) = req.approve {
        changes.push(format!(
            "approve {} -> {}",
            row.approve.as_str(),
            approve.as_str()
        ));
        row.approve = approve;
    }
    if let Some(grace) = req.grace_secs {
        changes.push(format!("grace {}s -> {grace}s", row.grace_secs));
        row.grace_secs = grace;
    }
    if changes.is_empty() {
        return Err(Error::input(
            "nothing to change: give --url, --ca-file, --no-ca-file, --approve or --grace",
        ));
    }
    let tx = site.state.transaction()?;
    tx.update_endorser(&row)?;
    tx.audit(
        "trust-edited",
        Some(row.name.as_str()),
        None,
        &changes.join("; "),
    )?;
    tx.commit()?;
    Ok(row)
}

/// What happens to an endorser's rollback memory when its key is re-pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SerialMemory {
    /// The history goes on under the new key: no older catalog than the
    /// last one accepted is taken from it either.
    Carry,
    /// Start afresh: the new key has no memory at all (after a compromise,
    /// the attacker may have pushed the serial to a height that would lock
    /// the real endorser out).
    Reset,
}

/// What `trust rekey` did.
#[derive(Debug, Serialize)]
pub struct Rekey {
    /// The endorser.
    pub name: String,
    /// The key id no longer trusted.
    pub old_key_id: String,
    /// The key id trusted now.
    pub new_key_id: String,
    /// The highest serial the new key must exceed, if any.
    pub carried_serial: Option<u64>,
}

/// The site operator re-pins an endorser's key (compromise recovery, or a
/// rotation made by hand): catalogs signed by the old key are refused from
/// now on; the endorser's decisions and images stay.
pub fn rekey(site: &mut Site, name: &str, key: PublicKey, memory: SerialMemory) -> Result<Rekey> {
    let Some(row) = site.state.endorser(name)? else {
        return Err(Error::input(format!(
            "{name} is not a trusted endorser (see `vmic trust list`)"
        )));
    };
    let old = PublicKey::parse(&row.pubkey)
        .map_err(|e| e.context(format!("stored key of endorser {name}")))?;
    if old == key && memory == SerialMemory::Carry {
        return Err(Error::input(format!(
            "endorser {name} already has key {} (add --reset-serial to reset its rollback memory)",
            key.key_id
        )));
    }
    refuse_key_clash(site, &row.name, &key)?;
    let tx = site.state.transaction()?;
    tx.set_endorser_key(name, &key)?;
    if old != key {
        tx.record_key_change(name, &old, &key)?;
    }
    match memory {
        SerialMemory::Carry => {
            tx.carry_rollback(&old, &key)?;
            tx.adopt_legacy_serial(&key)?;
        }
        SerialMemory::Reset => tx.forget_rollback(&key)?,
    }
    let detail = format!(
        "key {} replaced by {}; rollback memory {}",
        old.key_id,
        key.key_id,
        match memory {
            SerialMemory::Carry => "carried over",
            SerialMemory::Reset => "reset (--reset-serial)",
        }
    );
    tx.audit("trust-rekeyed", Some(name), None, &detail)?;
    tx.commit()?;
    Ok(Rekey {
        name: name.to_string(),
        old_key_id: old.key_id.to_string(),
        new_key_id: key.key_id.to_string(),
        carried_serial: site.state.serial(&key)?.map(|m| m.highest_serial),
    })
}

/// Identity is the whole key. A key whose id another trusted key already
/// has could pass for it wherever an id is shown or compared, and one key
/// under two names would share one rollback memory between two endorsers:
/// both are refused.
pub(crate) fn refuse_key_clash(site: &Site, name: &EndorserName, key: &PublicKey) -> Result<()> {
    for other in site.state.endorsers()? {
        let Ok(theirs) = PublicKey::parse(&other.pubkey) else {
            continue;
        };
        if theirs == *key && other.name != *name {
            return Err(Error::input(format!(
                "key {} is already trusted as endorser {}; one key is one endorser (remove {} first to rename it)",
                key.key_id, other.name, other.name
            )));
        }
        if theirs.key_id == key.key_id && theirs != *key {
            return Err(Error::verification(format!(
                "key id {} is already used by the different key of endorser {}; refusing a key that could pass for it",
                key.key_id, other.name
            )));
        }
    }
    Ok(())
}

/// A source given to `trust add`: http(s) and file:// URLs as they are
/// (checked the way `sync` will read them), a plain directory made absolute
/// (cron runs from anywhere).
pub(crate) fn normalise_source(url: &str) -> Result<String> {
    match Location::parse(url)? {
        Location::Http(_) => Ok(url.to_string()),
        Location::Local(_) if url.contains("://") => Ok(url.to_string()),
        Location::Local(path) => {
            let abs = path
                .canonicalize()
                .map_err(|e| Error::io("open source directory", &path, e))?;
            Ok(abs.display().to_string())
        }
    }
}

/// A trusted endorser with where its history stands, for `trust list`.
#[derive(Debug, Serialize)]
pub struct EndorserSummary {
    /// The stored endorser.
    #[serde(flatten)]
    pub row: EndorserRow,
    /// The highest serial accepted from its key, if any.
    pub serial: Option<u64>,
    /// That catalog's expiry.
    pub expires: Option<String>,
    /// When that catalog was issued.
    pub issued: Option<String>,
    /// The VOs it is trusted through.
    pub vos: Vec<String>,
}

/// Every trusted endorser with its last accepted serial and expiry.
pub fn summaries(site: &Site) -> Result<Vec<EndorserSummary>> {
    let members = site.state.members(None)?;
    site.state
        .endorsers()?
        .into_iter()
        .map(|row| {
            let memory = match PublicKey::parse(&row.pubkey) {
                Ok(key) => site.state.serial(&key)?,
                Err(_) => None,
            };
            let vos = members
                .iter()
                .filter(|m| {
                    m.name == row.name
                        && matches!(m.status, MemberStatus::Trusted | MemberStatus::Kept)
                })
                .map(|m| m.vo.clone())
                .collect();
            Ok(EndorserSummary {
                vos,
                serial: memory.as_ref().map(|m| m.highest_serial),
                issued: memory.as_ref().and_then(|m| m.issued.clone()),
                expires: memory.map(|m| m.expires),
                row,
            })
        })
        .collect()
}

/// What `trust remove` did.
#[derive(Debug, Serialize)]
pub struct Removal {
    /// The endorser no longer trusted.
    pub name: String,
    /// Its imported images, taken out of the store.
    pub withdrawn: Vec<String>,
    /// Its other images (pending, approved, rejected, …), dropped.
    pub dropped: Vec<String>,
}

/// Stop trusting an endorser: every image of it is withdrawn (hooks fire),
/// its rows stay for the record, the endorser entry goes. The rollback memory
/// of its key is kept.
/// An endorser that came through a VO is declined: the VO does not bring
/// it back until `vmic trust accept`.
pub fn remove(site: &mut Site, name: &str) -> Result<Removal> {
    if site.state.endorser(name)?.is_none() {
        return Err(Error::input(format!(
            "{name} is not a trusted endorser (see `vmic trust list`)"
        )));
    }
    let reason = format!("endorser {name} is no longer trusted by this site");
    let removal = remove_because(site, name, &reason)?;
    let tx = site.state.transaction()?;
    tx.set_member_status(name, MemberStatus::Trusted, MemberStatus::Declined)?;
    tx.set_member_status(name, MemberStatus::Kept, MemberStatus::Declined)?;
    tx.commit()?;
    Ok(removal)
}

/// Stop trusting `name` for `reason` (the operator's, or its VO's):
/// withdraw its images, drop the endorser, log and fire the hook.
pub(crate) fn remove_because(site: &mut Site, name: &str, reason: &str) -> Result<Removal> {
    let (mut withdrawn, mut dropped) = (Vec::new(), Vec::new());
    for row in site.state.images_of(name)? {
        if row.state != ImageState::Revoked {
            // Only an image with a copy in the store is taken out of use
            // (imported, or a rewritten version keeping its old copy); the
            // rest (pending, approved, rejected, …) is simply dropped.
            let was_in_use = row.store_path.is_some();
            store::withdraw(
                site,
                &row,
                ImageState::Revoked,
                reason,
                HookEvent::Revoke,
                Decider::Site,
            )?;
            if was_in_use {
                withdrawn.push(row.label());
            } else {
                dropped.push(row.label());
            }
        }
    }
    store::forget_catalog(site, name)?;
    let tx = site.state.transaction()?;
    tx.remove_endorser(name)?;
    let detail = format!(
        "{reason}: {} image(s) withdrawn from the store, {} other(s) dropped",
        withdrawn.len(),
        dropped.len()
    );
    store::endorser_event(
        &tx,
        "trust-removed",
        HookEvent::EndorserRemoved,
        name,
        &detail,
    )?;
    tx.commit()?;
    crate::hooks::flush_outbox(site)?;
    Ok(Removal {
        name: name.into(),
        withdrawn,
        dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{catalog, row};

    fn request(name: &str, url: &str) -> TrustAdd {
        let key = vmic_format::minisign::SecretKey::generate().unwrap();
        TrustAdd {
            name: name.into(),
            pubkey: key.public_key(),
            urls: vec![url.into()],
            ca_file: None,
            approve: None,
            grace_secs: 0,
        }
    }

    #[test]
    fn names_and_sources_are_checked_and_names_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let mut site = Site::init(&dir.path().join("site")).unwrap();
        let row = add(&mut site, request("lab", "https://images.example.org/lab/")).unwrap();
        assert_eq!(row.approve, ApproveMode::Auto);
        let err = add(&mut site, request("lab", "https://elsewhere/")).unwrap_err();
        assert!(err.message().contains("already trusted"), "{err}");
        for (name, url) in [
            ("../x", "https://h/"),
            ("ok", "ftp://h/"),
            ("ok", "/no/such/dir"),
        ] {
            let err = add(&mut site, request(name, url)).unwrap_err();
            assert_eq!(
                err.kind(),
                crate::error::ErrorKind::Input,
                "{name} {url}: {err}"
            );
        }
        // A plain directory is stored absolute: cron runs from anywhere.
        let row = add(&mut site, request("local", dir.path().to_str().unwrap())).unwrap();
        assert!(row.url.starts_with('/'));
    }

    #[test]
    fn removal_withdraws_every_image_and_keeps_the_rollback_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut site = Site::init(&dir.path().join("site")).unwrap();
        let req = request("lab", "https://h/");
        let key = req.pubkey.clone();
        add(&mut site, req).unwrap();
        let c = catalog(&[("a", "1", b"1"), ("b", "1", b"2")], &[]);
        let tx = site.state.transaction().unwrap();
        tx.put_image(&row(&c, "a", "1", ImageState::Pending, Decider::Policy))
            .unwrap();
        tx.put_image(&row(&c, "b", "1", ImageState::Revoked, Decider::Sync))
            .unwrap();
        tx.accept_serial(&key, 7, "h", "x").unwrap();
        tx.commit().unwrap();
        let removal = remove(&mut site, "lab").unwrap();
        assert!(
            removal.withdrawn.is_empty(),
            "a pending image is not withdrawn"
        );
        assert_eq!(removal.dropped, ["a@1"]);
        assert!(site.state.endorser("lab").unwrap().is_none());
        assert_eq!(site.state.serial(&key).unwrap().unwrap().highest_serial, 7);
        let err = remove(&mut site, "lab").unwrap_err();
        assert!(err.message().contains("not a trusted endorser"), "{err}");
        // Trusted again, the key finds its memory.
        let mut again = request("lab2", "https://h/");
        again.pubkey = key.clone();
        add(&mut site, again).unwrap();
        assert_eq!(site.state.serial(&key).unwrap().unwrap().highest_serial, 7);
    }

    #[test]
    fn a_key_posing_with_another_keys_id_is_refused_and_one_key_is_one_endorser() {
        let dir = tempfile::tempdir().unwrap();
        let mut site = Site::init(&dir.path().join("site")).unwrap();
        let victim = request("victim", "https://h/");
        let victim_key = victim.pubkey.clone();
        add(&mut site, victim).unwrap();
        // Another key pair given the victim's key id (anyone can choose it).
        let mut poser = request("poser", "https://h/");
        let text = poser.pubkey.to_base64();
        let mut raw = base64_decode(&text);
        raw[2..10].copy_from_slice(&victim_key.key_id.0);
        poser.pubkey = PublicKey::parse(&base64_encode(&raw)).unwrap();
        let err = add(&mut site, poser).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Verification);
        assert!(
            err.message()
                .contains("already used by the different key of endorser victim"),
            "{err}"
        );
        let mut twice = request("alias", "https://h/");
        twice.pubkey = victim_key;
        let err = add(&mut site, twice).unwrap_err();
        assert!(
            err.message().contains("already trusted as endorser victim"),
            "{err}"
        );
        assert_eq!(site.state.endorsers().unwrap().len(), 1);
    }

    fn base64_decode(text: &str) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap()
    }

    fn base64_encode(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}
