//! `vmic sync`: for each trusted endorser, fetch and authenticate its catalog,
//! refuse rollbacks and (by default) expired catalogs, decide what to do with
//! every image under site policy, fetch approved images while hashing them,
//! import only verified bytes, and withdraw whatever was revoked, replaced or
//! dropped.
//!
//! Fail-closed: any doubt about a catalog leaves the previous good state in
//! place; a failure at one endorser never stops the others, and the exit code
//! reports the worst outcome.

use jiff::Timestamp;
use serde::Serialize;

use crate::catalog::{Catalog, Image};
use crate::error::{Error, ErrorKind, Result};
use crate::fetch::{HttpClient, HttpConfig};
use crate::hashing::{Engine, Progress};
use crate::hooks::{HookSummary, flush_outbox};
use crate::minisign::PublicKey;
use crate::partfile::{Expected, PartFile};
use crate::site::Site;
use crate::state::{EndorserRow, ImageRow, image_state as st};
use crate::store;
use crate::verify::{Authenticated, authenticate};

pub struct SyncOptions {
    /// Endorsers to sync; empty means all.
    pub endorsers: Vec<String>,
    pub dry_run: bool,
    pub allow_expired: bool,
    pub now: Option<Timestamp>,
}

#[derive(Debug, Serialize)]
pub struct SyncReport {
    pub dry_run: bool,
    pub endorsers: Vec<EndorserReport>,
    pub reconciled: Vec<String>,
    pub hooks: HookSummary,
    pub exit_code: i32,
}

#[derive(Debug, Default, Serialize)]
pub struct EndorserReport {
    pub name: String,
    pub ok: bool,
    pub exit_code: i32,
    pub error: Option<String>,
    pub serial: Option<u64>,
    pub expires: Option<Timestamp>,
    pub warnings: Vec<String>,
    pub plan: Vec<PlanItem>,
    pub imported: Vec<String>,
    pub quarantined: Vec<String>,
    pub withdrawn: Vec<String>,
    pub failed: Vec<String>,
}

/// One intended change, as `--dry-run` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PlanItem {
    /// `import`, `pending`, `reject`, `withdraw`, `keep`.
    pub action: String,
    pub image: String,
    pub size: u64,
    pub reason: String,
}

pub fn sync(
    site: &mut Site,
    opts: &SyncOptions,
    engine: &Engine,
    progress: &dyn Progress,
) -> Result<SyncReport> {
    let all = site.state.endorsers()?;
    for wanted in &opts.endorsers {
        if !all.iter().any(|e| &e.name == wanted) {
            return Err(Error::input(format!(
                "{wanted} is not a trusted endorser (see `vmic trust list`)"
            )));
        }
    }
    let reconciled = if opts.dry_run {
        Vec::new()
    } else {
        store::reconcile(site)?
    };
    let mut reports = Vec::new();
    for endorser in all
        .iter()
        .filter(|e| opts.endorsers.is_empty() || opts.endorsers.contains(&e.name))
    {
        let mut report = EndorserReport {
            name: endorser.name.clone(),
            ..Default::default()
        };
        let outcome = sync_endorser(site, endorser, opts, (engine, progress), &mut report);
        finish_report(&mut report, outcome);
        // Every endorser-level message names its endorser, once.
        let prefix = format!("endorser {}", endorser.name);
        if let Some(error) = report.error.as_mut().filter(|e| !e.starts_with(&prefix)) {
            *error = format!("{prefix}: {error}");
        }
        if !opts.dry_run {
            let tx = site.state.transaction()?;
            tx.record_sync(&endorser.name, report.error.as_deref())?;
            if let Some(error) = &report.error {
                tx.audit("sync-failed", Some(&endorser.name), None, error)?;
            }
            tx.commit()?;
        }
        reports.push(report);
    }
    let hooks = if opts.dry_run {
        HookSummary::default()
    } else {
        flush_outbox(site)?
    };
    let exit_code = worst(
        reports
            .iter()
            .map(|r| r.exit_code)
            .chain([if hooks.failed > 0 { 3 } else { 0 }]),
    );
    Ok(SyncReport {
        dry_run: opts.dry_run,
        endorsers: reports,
        reconciled,
        hooks,
        exit_code,
    })
}

/// The exit code of several outcomes: a verification failure (1) outranks a
/// retryable failure (3), which outranks an input error (2), which outranks 0.
fn worst(codes: impl Iterator<Item = i32>) -> i32 {
    let rank = |c: i32| match c {
        1 => 3,
        3 => 2,
        2 => 1,
        _ => 0,
    };
    codes.max_by_key(|&c| rank(c)).unwrap_or(0)
}

fn finish_report(report: &mut EndorserReport, outcome: Result<()>) {
    let image_failure = if !report.quarantined.is_empty() {
        Some(ErrorKind::Verification)
    } else if !report.failed.is_empty() {
        Some(ErrorKind::Io)
    } else {
        None
    };
    match outcome {
        Err(e) => {
            report.exit_code = worst(
                [
                    e.kind().exit_code(),
                    image_failure.map_or(0, |k| k.exit_code()),
                ]
                .into_iter(),
            );
            report.error = Some(e.message().to_string());
        }
        Ok(()) => {
            report.exit_code = image_failure.map_or(0, |k| k.exit_code());
            if let Some(kind) = image_failure {
                let what = if kind == ErrorKind::Verification {
                    "quarantined"
                } else {
                    "could not be fetched"
                };
                let n = report.quarantined.len().max(report.failed.len());
                report.error = Some(format!("{n} image(s) {what}"));
            }
        }
    }
    report.ok = report.exit_code == 0;
}

fn http_client(site: &Site, endorser: &EndorserRow) -> Result<HttpClient> {
    HttpClient::new(&HttpConfig {
        timeout: site.config.http_timeout(),
        connect_timeout: site.config.connect_timeout(),
        retries: site.config.http.retries,
        ca_file: endorser.ca_file.as_ref().map(Into::into),
        ..HttpConfig::default()
    })
}

fn sync_endorser(
    site: &mut Site,
    endorser: &EndorserRow,
    opts: &SyncOptions,
    (engine, progress): (&Engine, &dyn Progress),
    report: &mut EndorserReport,
) -> Result<()> {
    let key = PublicKey::parse(&endorser.pubkey)
        .map_err(|e| e.context(format!("stored key of endorser {}", endorser.name)))?;
    let now = opts.now.unwrap_or_else(Timestamp::now);
    let client = http_client(site, endorser)?;
    let source = crate::source::open_remote(&endorser.url, &client)?;
    let fetched = authenticate(source.as_ref(), &key, site.config.policy.max_catalog_size);
    let Authenticated {
        catalog, sha256, ..
    } = match fetched {
        Ok(a) => a,
        Err(e) => {
            // No usable fresh catalog: the last accepted one may have run out.
            if !opts.dry_run {
                expire_if_stale(site, endorser, &key, now, report)?;
            }
            return Err(e.context(format!("endorser {}", endorser.name)));
        }
    };
    report.serial = Some(catalog.serial);
    report.expires = Some(catalog.expires);
    // Rollback first: a replayed old (and expired) catalog must not be able
    // to make the site withdraw images that a newer catalog still lists.
    check_rollback(site, &key, &catalog, &sha256.to_hex(), &endorser.name)?;
    if catalog.is_expired_at(now) {
        if !opts.allow_expired {
            if !opts.dry_run {
                expire_images(site, endorser, &catalog.expires.to_string(), report)?;
            }
            return Err(Error::verification(format!(
                "endorser {}: catalog serial {} expired at {}; nothing new is imported (--allow-expired overrides this, loudly)",
                endorser.name, catalog.serial, catalog.expires
            )));
        }
        report.warnings.push(format!(
            "CATALOG EXPIRED at {} — used only because of --allow-expired",
            catalog.expires
        ));
    }
    let decisions = plan(site, endorser, &catalog)?;
    report.plan = decisions.iter().map(|d| d.item.clone()).collect();
    if opts.dry_run {
        return Ok(());
    }
    apply_decisions(site, endorser, &key, &catalog, &sha256.to_hex(), &decisions)?;
    fetch_approved(
        site,
        endorser,
        &catalog,
        source.as_ref(),
        (engine, progress),
        report,
    )?;
    for d in decisions.iter().filter(|d| d.item.action == "withdraw") {
        if let Some(row) = &d.row {
            store::withdraw(site, row, st::REVOKED, &d.item.reason, "revoke", "sync")?;
            report.withdrawn.push(row.label());
        }
    }
    Ok(())
}

/// Refuse anything older than, or different at the same serial as, the
/// newest catalog ever accepted from this key.
fn check_rollback(
    site: &Site,
    key: &PublicKey,
    catalog: &Catalog,
    sha256: &str,
    name: &str,
) -> Result<()> {
    let Some(memory) = site.state.serial(&key.key_id.to_string())? else {
        return Ok(());
    };
    if catalog.serial < memory.highest_serial {
        return Err(Error::verification(format!(
            "endorser {name}: catalog serial {} is older than serial {} already accepted; refusing a rollback (replayed or stale mirror?)",
            catalog.serial, memory.highest_serial
        )));
    }
    if catalog.serial == memory.highest_serial && sha256 != memory.catalog_sha256 {
        return Err(Error::verification(format!(
            "endorser {name}: catalog serial {} has different content (sha256 {sha256}) from the serial {} accepted earlier (sha256 {}); refusing it",
            catalog.serial, memory.highest_serial, memory.catalog_sha256
        )));
    }
    Ok(())
}

struct Decision {
    item: PlanItem,
    /// The existing row, for withdrawals.
    row: Option<ImageRow>,
    /// The new row to write (new or re-decided images).
    new_row: Option<ImageRow>,
}

/// Decide, without writing anything, what happens to every image.
fn plan(site: &Site, endorser: &EndorserRow, catalog: &Catalog) -> Result<Vec<Decision>> {
    let existing = site.state.images_of(&endorser.name)?;
    let find = |img: &Image| {
        existing
            .iter()
            .find(|r| r.id == img.id && r.version == img.version)
    };
    let mut out = Vec::new();
    for image in &catalog.images {
        let row = find(image);
        let same_bytes =
            row.is_some_and(|r| r.sha256 == image.sha256.to_hex() && r.size == image.size);
        let keep_state = row.filter(|_| same_bytes).map(|r| r.state.as_str());
        let item = |action: &str, reason: String| PlanItem {
            action: action.into(),
            image: image.label(),
            size: image.size,
            reason,
        };
        match (keep_state, row) {
            (Some(st::IMPORTED), _) => out.push(Decision {
                item: item("keep", "already imported".into()),
                row: None,
                new_row: None,
            }),
            (Some(st::APPROVED | st::QUARANTINED), _) => out.push(Decision {
                item: item("import", "approved; fetching".into()),
                row: None,
                new_row: None,
            }),
            (Some(st::REJECTED), Some(r)) if r.decided_by == "manual" => out.push(Decision {
                item: item("keep", format!("rejected by the site: {}", r.reason)),
                row: None,
                new_row: None,
            }),
            (Some(st::PENDING), _) if site.config.denial(image).is_none() => out.push(Decision {
                item: item("pending", "waiting for `vmic approve`".into()),
                row: None,
                new_row: None,
            }),
            _ => {
                // New, changed bytes under the same version, re-listed after a
                // revocation/expiry, or a policy decision to re-evaluate.
                let (state, reason, action) = decide(site, endorser, image);
                if keep_state == Some(state) && row.is_some_and(|r| r.reason == reason) {
                    // Same bytes, same decision as last time: nothing to record again.
                    out.push(Decision {
                        item: item("keep", reason),
                        row: None,
                        new_row: None,
                    });
                    continue;
                }
                let mut d = Decision {
                    item: item(action, reason.clone()),
                    row: None,
                    new_row: Some(new_row(&endorser.name, image, state, &reason)),
                };
                if let Some(old) = row.filter(|r| r.state == st::IMPORTED) {
                    // Different bytes under an imported version: the old file goes.
                    d.row = Some(old.clone());
                }
                out.push(d);
            }
        }
    }
    for row in &existing {
        let listed = catalog
            .images
            .iter()
            .any(|i| i.id == row.id && i.version == row.version);
        if listed || row.state == st::REVOKED {
            continue;
        }
        let revocation = catalog
            .revoked
            .iter()
            .find(|r| r.id == row.id && r.version.as_ref().is_none_or(|v| *v == row.version));
        let newer = catalog.images.iter().find(|i| i.id == row.id);
        let reason = match (revocation, newer) {
            (Some(r), _) => format!("revoked by the endorser: {}", r.reason),
            (None, Some(n)) => format!("replaced by {}", n.label()),
            (None, None) => "no longer in the endorser's catalog".into(),
        };
        out.push(Decision {
            item: PlanItem {
                action: "withdraw".into(),
                image: row.label(),
                size: row.size,
                reason,
            },
            row: Some(row.clone()),
            new_row: None,
        });
    }
    Ok(out)
}

fn decide(
    site: &Site,
    endorser: &EndorserRow,
    image: &Image,
) -> (&'static str, String, &'static str) {
    if let Some(why) = site.config.denial(image) {
        return (st::REJECTED, why, "reject");
    }
    if endorser.approve == "manual" {
        return (st::PENDING, "waiting for `vmic approve`".into(), "pending");
    }
    (st::APPROVED, "approved automatically".into(), "import")
}

fn new_row(endorser: &str, image: &Image, state: &str, reason: &str) -> ImageRow {
    ImageRow {
        endorser: endorser.into(),
        id: image.id.clone(),
        version: image.version.clone(),
        state: state.into(),
        reason: reason.into(),
        decided_by: "policy".into(),
        size: image.size,
        sha256: image.sha256.to_hex(),
        format: image.format.clone(),
        entry: serde_json::to_string(image).unwrap_or_default(),
        store_path: None,
        updated_at: String::new(),
    }
}

/// Accept the serial and record new decisions, in one transaction.
fn apply_decisions(
    site: &mut Site,
    endorser: &EndorserRow,
    key: &PublicKey,
    catalog: &Catalog,
    sha256: &str,
    decisions: &[Decision],
) -> Result<()> {
    // Old bytes under a changed version leave the store before anything else.
    for d in decisions.iter().filter(|d| d.new_row.is_some()) {
        if let Some(old) = &d.row {
            store::withdraw(
                site,
                old,
                st::REVOKED,
                "the endorser changed this version's bytes",
                "revoke",
                "sync",
            )?;
        }
    }
    let key_id = key.key_id.to_string();
    // Only a catalog not seen before is news; cron reruns stay out of the log.
    let seen = site
        .state
        .serial(&key_id)?
        .is_some_and(|m| m.highest_serial == catalog.serial && m.catalog_sha256 == sha256);
    let tx = site.state.transaction()?;
    if !seen {
        tx.accept_serial(
            &key_id,
            catalog.serial,
            sha256,
            &catalog.expires.to_string(),
        )?;
        tx.audit(
            "catalog-accepted",
            Some(&endorser.name),
            None,
            &format!(
                "serial {} (sha256 {sha256}), expires {}",
                catalog.serial, catalog.expires
            ),
        )?;
    }
    for d in decisions {
        let Some(row) = &d.new_row else { continue };
        tx.put_image(row)?;
        let action = match row.state.as_str() {
            st::REJECTED => "rejected",
            st::PENDING => "pending",
            _ => "approved",
        };
        tx.audit(action, Some(&row.endorser), Some(&row.label()), &row.reason)?;
        if row.state == st::REJECTED {
            tx.enqueue_hook("reject", &store::hook_env("reject", row, None, &row.reason))?;
        }
    }
    tx.commit()
}

/// Fetch, verify and import every approved (or previously quarantined)
/// image of this catalog.
fn fetch_approved(
    site: &mut Site,
    endorser: &EndorserRow,
    catalog: &Catalog,
    source: &dyn crate::source::Source,
    (engine, progress): (&Engine, &dyn Progress),
    report: &mut EndorserReport,
) -> Result<()> {
    let rows = site.state.images_of(&endorser.name)?;
    for row in rows
        .iter()
        .filter(|r| r.state == st::APPROVED || r.state == st::QUARANTINED)
    {
        let Some(image) = catalog
            .images
            .iter()
            .find(|i| i.id == row.id && i.version == row.version)
        else {
            continue;
        };
        match fetch_one(site, row, image, source, (engine, progress)) {
            Ok(FetchOutcome::Imported) => report.imported.push(row.label()),
            Ok(FetchOutcome::Quarantined(why)) => {
                report.quarantined.push(format!("{}: {why}", row.label()))
            }
            Err(e) => {
                audit_image(site, row, "fetch-failed", e.message())?;
                if e.kind() == ErrorKind::Verification {
                    report
                        .quarantined
                        .push(format!("{}: {}", row.label(), e.message()));
                } else {
                    report
                        .failed
                        .push(format!("{}: {}", row.label(), e.message()));
                }
            }
        }
    }
    Ok(())
}

/// Record one event about an image in the audit log, on its own.
fn audit_image(site: &mut Site, row: &ImageRow, action: &str, message: &str) -> Result<()> {
    let tx = site.state.transaction()?;
    tx.audit(action, Some(&row.endorser), Some(&row.label()), message)?;
    tx.commit()
}

enum FetchOutcome {
    Imported,
    Quarantined(String),
}

fn fetch_one(
    site: &mut Site,
    row: &ImageRow,
    image: &Image,
    source: &dyn crate::source::Source,
    (engine, progress): (&Engine, &dyn Progress),
) -> Result<FetchOutcome> {
    progress.working_on(&row.label());
    progress.begin(image.size);
    let tmp_dir = site.tmp().join(&row.endorser);
    store::ensure_real_dir(&tmp_dir)?;
    let part = tmp_dir.join(format!("{}@{}.part", row.id, row.version));
    if std::fs::symlink_metadata(&part).is_ok_and(|m| !m.file_type().is_file()) {
        store::remove_if_present(&part)?;
    }
    let expected = Expected {
        size: image.size,
        chunk_size: image.chunk_size,
        chunks: image.chunks.clone(),
    };
    let mut landing = PartFile::open(&part, expected, engine, progress)?;
    if landing.discarded() > 0 {
        let why = format!(
            "{} bytes of an interrupted download failed their check and are fetched again",
            landing.discarded()
        );
        audit_image(site, row, "partial-discarded", &why)?;
    }
    if let Err(e) = source.fetch_image(image, &mut landing) {
        // Whatever arrived stays for the next run to continue from (or as
        // evidence in quarantine).
        let kept = landing.suspend();
        if e.kind() == ErrorKind::Verification {
            let why = e.message().to_string();
            store::quarantine(site, row, &part, &why)?;
            return Ok(FetchOutcome::Quarantined(why));
        }
        return Err(match kept {
            Ok(()) => e,
            Err(lost) => Error::new(
                e.kind(),
                format!(
                    "{}; what arrived was not kept either: {}",
                    e.message(),
                    lost.message()
                ),
            ),
        });
    }
    let problems = landing.finish()?;
    if let Some(first) = problems.first() {
        let more = if problems.len() > 1 {
            format!(" (and {} more problems)", problems.len() - 1)
        } else {
            String::new()
        };
        let why = format!("{}{more}", first.describe());
        store::quarantine(site, row, &part, &why)?;
        return Ok(FetchOutcome::Quarantined(why));
    }
    store::import(site, row, &part)?;
    Ok(FetchOutcome::Imported)
}

/// When the last accepted catalog has expired and no fresh one can be had,
/// site policy decides what happens to its images (default: withdrawn).
fn expire_if_stale(
    site: &mut Site,
    endorser: &EndorserRow,
    key: &PublicKey,
    now: Timestamp,
    report: &mut EndorserReport,
) -> Result<()> {
    let Some(memory) = site.state.serial(&key.key_id.to_string())? else {
        return Ok(());
    };
    let expired = memory.expires.parse::<Timestamp>().is_ok_and(|t| t <= now);
    if expired {
        expire_images(site, endorser, &memory.expires, report)?;
    }
    Ok(())
}

fn expire_images(
    site: &mut Site,
    endorser: &EndorserRow,
    expires: &str,
    report: &mut EndorserReport,
) -> Result<()> {
    if site.config.policy.on_expired == crate::config::OnExpired::Keep {
        report.warnings.push(format!(
            "catalog expired at {expires}; images kept by site policy (on_expired = \"keep\")"
        ));
        return Ok(());
    }
    let reason = format!("the endorser's catalog expired at {expires}");
    for row in site.state.images_of(&endorser.name)? {
        if matches!(
            row.state.as_str(),
            st::IMPORTED | st::APPROVED | st::PENDING | st::QUARANTINED
        ) {
            store::withdraw(site, &row, st::EXPIRED, &reason, "expire", "sync")?;
            report.withdrawn.push(row.label());
        }
    }
    Ok(())
}
