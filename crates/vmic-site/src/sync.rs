//! `vmic sync`: for each trusted endorser, fetch and authenticate its catalog,
//! refuse rollbacks and (by default) expired catalogs, plan what happens to
//! every image under site policy ([`crate::plan`], pure), then apply: record
//! the decisions, fetch approved images while hashing them, import only
//! verified bytes, and withdraw whatever was revoked, replaced or dropped.
//!
//! Fail-closed: any doubt about a catalog leaves the previous good state in
//! place; a failure at one endorser never stops the others, and the report
//! says which kind of failure each endorser met (the binary turns the most
//! severe into the exit code).

use jiff::Timestamp;
use serde::Serialize;

use vmic_engine::fetch::Validators;
use vmic_engine::fetch::{HttpClient, HttpConfig};
use vmic_engine::hashing::{Engine, Progress};
use vmic_engine::partfile::PartFile;
use vmic_engine::publication::{CachedCatalog, Publication};
use vmic_format::authenticate::Authenticated;
use vmic_format::catalog::{Catalog, Image};
use vmic_format::digest::Sha256Digest;
use vmic_format::ids::Serial;
use vmic_format::minisign::PublicKey;

use crate::config::OnExpired;
use crate::error::{Error, ErrorKind, Result};
use crate::hooks::{HookSummary, flush_outbox};
use crate::model::{Decider, HookEvent, ImageState};
use crate::plan::{Action, Decision, ExpiryPlan, PlanItem, PlanPolicy, plan, plan_expiry};
use crate::site::Site;
use crate::state::{EndorserRow, ImageRow, SerialRow};
use crate::store;

/// What to sync and how.
pub struct SyncOptions {
    /// Endorsers to sync; empty means all.
    pub endorsers: Vec<String>,
    /// Plan only; change nothing.
    pub dry_run: bool,
    /// Use expired catalogs (loudly).
    pub allow_expired: bool,
    /// Time to judge expiry against; `None` means now.
    pub now: Option<Timestamp>,
    /// An air-gapped bundle (`vmic bundle`) to read every endorser from
    /// instead of its sources; VO lists are not read.
    pub from: Option<std::path::PathBuf>,
}

/// What a sync did (`vmic sync --json`).
#[derive(Debug, Serialize)]
pub struct SyncReport {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// One report per supported VO, fetched before the endorsers.
    pub vos: Vec<crate::vo::VoReport>,
    /// One report per endorser synced.
    pub endorsers: Vec<EndorserReport>,
    /// What crash recovery had to repair first.
    pub reconciled: Vec<String>,
    /// Hook deliveries.
    pub hooks: HookSummary,
}

impl SyncReport {
    /// The most severe failure of the whole run (a failed hook is worth
    /// retrying).
    pub fn failure(&self) -> Option<ErrorKind> {
        let hooks = (self.hooks.failed > 0).then_some(ErrorKind::Io);
        let vos = self.vos.iter().filter_map(|v| v.failure);
        ErrorKind::most_severe(
            self.endorsers
                .iter()
                .filter_map(|e| e.failure)
                .chain(vos)
                .chain(hooks),
        )
    }
}

/// What happened at one endorser.
#[derive(Debug, Default, Serialize)]
pub struct EndorserReport {
    /// The endorser's name at this site.
    pub name: String,
    /// Nothing failed.
    pub ok: bool,
    /// The most severe failure, if any.
    pub failure: Option<ErrorKind>,
    /// What failed, naming the endorser.
    pub error: Option<String>,
    /// The serial of the catalog read.
    pub serial: Option<Serial>,
    /// Its expiry.
    pub expires: Option<Timestamp>,
    /// Loud warnings.
    pub warnings: Vec<String>,
    /// The plan.
    pub plan: Vec<PlanItem>,
    /// Images imported.
    pub imported: Vec<String>,
    /// Images quarantined, with why.
    pub quarantined: Vec<String>,
    /// Images withdrawn.
    pub withdrawn: Vec<String>,
    /// Images whose fetch failed in a retryable way.
    pub failed: Vec<String>,
    /// Images whose bytes the endorser changed under the same version
    /// (a loud event: exit 1 for the run that sees it, `rewrite` hook).
    pub rewritten: Vec<String>,
    /// Quarantined images not fetched this time: their download failed
    /// its check recently, and the next attempt waits (backoff).
    pub deferred: Vec<String>,
}

/// Sync every trusted endorser (or those named in `opts`).
pub fn sync(
    site: &mut Site,
    opts: &SyncOptions,
    engine: &Engine,
    progress: &dyn Progress,
) -> Result<SyncReport> {
    // VO lists first: they decide which endorsers there are. Syncing named
    // endorsers only leaves the VOs alone.
    let mut vos = if opts.endorsers.is_empty() {
        let when = (opts.now.unwrap_or_else(Timestamp::now), opts.dry_run);
        crate::vo::sync_vos(site, when, opts.from.as_deref())?
    } else {
        Vec::new()
    };
    let all = site.state.endorsers()?;
    for wanted in &opts.endorsers {
        if !all.iter().any(|e| e.name == *wanted.as_str()) {
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
    // A retired endorser (removed by its VO, images kept) is not synced:
    // no new images, and its last catalog's expiry no longer applies.
    let leaving = |e: &EndorserRow| {
        vos.iter()
            .any(|v| v.leaving.iter().any(|(n, _)| e.name == *n.as_str()))
    };
    for endorser in all.iter().filter(|e| {
        e.retired.is_none()
            && !leaving(e)
            && (opts.endorsers.is_empty() || opts.endorsers.iter().any(|w| e.name == *w.as_str()))
    }) {
        vmic_engine::cancel::check()?;
        reports.push(sync_one(site, endorser, opts, (engine, progress))?);
    }
    // An interrupted run leaves the VOs' removals (and their lists) for the
    // next one: a replacement first, then the endorser it replaces.
    vmic_engine::cancel::check()?;
    crate::vo::finish_vos(site, &mut vos)?;
    let hooks = if opts.dry_run {
        HookSummary::default()
    } else {
        crate::chunks::prune(site)?;
        flush_outbox(site)?
    };
    Ok(SyncReport {
        dry_run: opts.dry_run,
        vos,
        endorsers: reports,
        reconciled,
        hooks,
    })
}

/// Sync one endorser and record how it went.
fn sync_one(
    site: &mut Site,
    endorser: &EndorserRow,
    opts: &SyncOptions,
    work: (&Engine, &dyn Progress),
) -> Result<EndorserReport> {
    let mut report = EndorserReport {
        name: endorser.name.to_string(),
        ..Default::default()
    };
    let outcome = sync_endorser(site, endorser, opts, work, &mut report);
    finish_report(&mut report, outcome);
    // Every endorser-level message names its endorser, once.
    let prefix = format!("endorser {}", endorser.name);
    if let Some(error) = report.error.as_mut().filter(|e| !e.starts_with(&prefix)) {
        *error = format!("{prefix}: {error}");
    }
    if !opts.dry_run {
        let tx = site.state.transaction()?;
        tx.record_sync(endorser.name.as_str(), report.error.as_deref())?;
        if let Some(error) = &report.error {
            tx.audit("sync-failed", Some(endorser.name.as_str()), None, error)?;
        }
        tx.commit()?;
    }
    Ok(report)
}

fn finish_report(report: &mut EndorserReport, outcome: Result<()>) {
    let image_failure = if !report.quarantined.is_empty() || !report.rewritten.is_empty() {
        Some(ErrorKind::Verification)
    } else if !report.failed.is_empty() {
        Some(ErrorKind::Io)
    } else {
        None
    };
    match outcome {
        Err(e) => {
            report.failure = ErrorKind::most_severe([e.kind()].into_iter().chain(image_failure));
            report.error = Some(e.message().to_string());
        }
        Ok(()) => {
            report.failure = image_failure;
            if image_failure.is_some() {
                report.error = Some(if !report.quarantined.is_empty() {
                    format!("{} image(s) quarantined", report.quarantined.len())
                } else if !report.rewritten.is_empty() {
                    format!(
                        "{} image(s) rewritten by the endorser under the same version",
                        report.rewritten.len()
                    )
                } else {
                    format!("{} image(s) could not be fetched", report.failed.len())
                });
            }
        }
    }
    report.ok = report.failure.is_none();
}

/// The site's HTTP settings, with a source's extra CA certificates.
pub(crate) fn http_client(site: &Site, ca_file: Option<&String>) -> Result<HttpClient> {
    HttpClient::new(&HttpConfig {
        timeout: site.config.http.timeout.duration(),
        connect_timeout: site.config.http.connect_timeout.duration(),
        document_deadline: site.config.http.deadline.duration(),
        min_rate: site.config.http.min_rate,
        rate_window: site.config.http.rate_window.duration(),
        retries: site.config.http.retries,
        ca_file: ca_file.map(Into::into),
        ..HttpConfig::default()
    })
}

fn sync_endorser(
    site: &mut Site,
    endorser: &EndorserRow,
    opts: &SyncOptions,
    work: (&Engine, &dyn Progress),
    report: &mut EndorserReport,
) -> Result<()> {
    let key = PublicKey::parse(&endorser.pubkey)
        .map_err(|e| e.context(format!("stored key of endorser {}", endorser.name)))?;
    let now = opts.now.unwrap_or_else(Timestamp::now);
    let Some(fetched) = fetch_catalog(site, endorser, &key, (opts, now), report)? else {
        return Ok(());
    };
    let Fetched {
        mut publication,
        authenticated:
            Authenticated {
                catalog,
                sha256,
                bytes,
                signature,
            },
        rotated,
        validators,
    } = match fetched {
        Ok(found) => found,
        Err(e) => return no_fresh_catalog(site, endorser, (&key, now), opts, e, report),
    };
    publication.add_mirrors(catalog.mirrors());
    // A dry run checks the history against the pinned key's memory.
    let key = match rotated.is_empty() || opts.dry_run {
        true => key,
        false => follow_rotation(site, endorser, (&key, &rotated), &publication)?,
    };
    if endorser.missing_since.is_some() && !opts.dry_run {
        catalog_found_again(site, endorser)?;
    }
    report.serial = Some(catalog.serial());
    report.expires = Some(catalog.expires());
    // Rollback first: a replayed old (and expired) catalog must not be able
    // to make the site withdraw images that a newer catalog still lists.
    // A refused replay is no fresh catalog either: whatever a mirror serves,
    // the last accepted catalog's expiry still applies (no freeze by replay).
    let memory = site.state.serial(&key)?;
    if let Err(refused) = check_history(memory.as_ref(), &key, &catalog, &sha256, endorser) {
        if !opts.dry_run {
            if refused.forked {
                record_fork(site, endorser, refused.error.message())?;
            }
            expire_if_stale(site, endorser, &key, now, report)?;
        }
        return Err(refused.error);
    }
    if catalog.is_expired_at(now)
        && refuse_or_warn_expired(site, endorser, &catalog, opts, report)? == Expired::Stop
    {
        return Ok(());
    }
    warn_if_expiring(site, endorser, &catalog, (now, opts.dry_run), report)?;
    let existing = site.state.images_of(endorser.name.as_str())?;
    // The policy is planned against twice, around the fetch that needs the
    // site mutably: a copy of the rules keeps the borrows apart.
    let deny = site.config.policy.deny.clone();
    let approved_bytes = match site.config.policy.carry_approval {
        true => Some(crate::plan::approved_bytes(&site.state.images()?)),
        false => None,
    };
    let policy = PlanPolicy {
        approve: endorser.approve,
        deny: &deny,
        approved_bytes: approved_bytes.as_ref(),
    };
    let decisions = plan(&existing, &endorser.name, &catalog, &policy);
    report.plan = decisions.iter().map(|d| d.item.clone()).collect();
    report.rewritten = rewrite_notes(&decisions);
    if opts.dry_run {
        return Ok(());
    }
    let history = (memory.as_ref(), &sha256);
    apply_decisions(site, endorser, &key, &catalog, history, &decisions)?;
    let signed = (bytes.as_slice(), signature.to_file_string(), validators);
    store::keep_catalog(site, endorser.name.as_str(), &sha256, signed)?;
    fetch_approved(site, endorser, &catalog, &publication, work, report)?;
    // Plan again on what is now in the store: a replaced version leaves
    // only once its replacement has been imported.
    let now_stored = site.state.images_of(endorser.name.as_str())?;
    let after_fetch = plan(&now_stored, &endorser.name, &catalog, &policy);
    withdraw_planned(site, &after_fetch, report)
}

/// Fetch and authenticate the endorser's catalog from the first source that
/// serves one, recording which sources were passed over; `None` when there
/// is nothing to read (an endorser the bundle given with `--from` lacks).
fn fetch_catalog(
    site: &mut Site,
    endorser: &EndorserRow,
    key: &PublicKey,
    (opts, now): (&SyncOptions, Timestamp),
    report: &mut EndorserReport,
) -> Result<Option<Result<Fetched>>> {
    let client = http_client(site, endorser.ca_file.as_ref())?;
    let cached = cached_copy(site, endorser, key)?;
    let Some(sources) = sources_to_try(site, endorser, (key, now), opts, report)? else {
        return Ok(None);
    };
    // The full mirrors the last accepted catalog names come after the
    // site's own sources (a bundle is read alone). They are read from the
    // kept catalog only when the own sources have all failed.
    let own = sources.clone();
    let mirrors = cached
        .iter()
        .filter(|_| opts.from.is_none())
        .flat_map(catalog_mirrors)
        .filter(move |m| !own.contains(m));
    let mut tried = SourcesTried::default();
    let limits = (site.config.policy.max_catalog_size, cached.as_ref());
    let fetched = first_source(
        sources.into_iter().chain(mirrors),
        key,
        limits,
        (&client, &mut tried),
    );
    if !opts.dry_run && !tried.skipped.is_empty() {
        let used = tried.used.as_deref().filter(|_| fetched.is_ok());
        record_source_health(site, endorser, (used, &tried.skipped), (now, report))?;
    }
    Ok(Some(fetched))
}

/// The catalog from the first of the endorser's sources that yields one
/// that authenticates: a source that is down, or serves bad bytes, moves on
/// to the next; only the signature decides. With every source failing,
/// the most severe failure is reported (a missing catalog only when every
/// source said so).
fn first_source(
    sources: impl IntoIterator<Item = String>,
    key: &PublicKey,
    limits: (u64, Option<&CachedCatalog>),
    (client, tried): (&HttpClient, &mut SourcesTried),
) -> Result<Fetched> {
    let mut failed: Vec<(String, Error)> = Vec::new();
    for source in sources {
        let attempt = Publication::open(&source, client)
            .and_then(|p| authenticate_following_rotations(p, key, limits));
        match attempt {
            Ok(found) => {
                tried.skipped = failed;
                tried.used = Some(source);
                return Ok(found);
            }
            Err(e) => failed.push((source, e)),
        }
    }
    Err(all_sources_failed(
        failed.into_iter().map(|(_, e)| e).collect(),
        "the endorser has no catalog source",
    ))
}

/// Which sources a fetch passed over, and which one served.
#[derive(Default)]
struct SourcesTried {
    skipped: Vec<(String, Error)>,
    used: Option<String>,
}

/// The failure to report when every source failed: the only one, or a
/// missing document when every source said so, else the most severe kind
/// with every message.
fn all_sources_failed(mut errors: Vec<Error>, none: &str) -> Error {
    if errors.len() <= 1 || errors.iter().all(Error::is_absent) {
        return if errors.is_empty() {
            Error::input(none)
        } else {
            errors.swap_remove(0)
        };
    }
    combined(&errors)
}

/// Several failures as one: the most severe kind, every message.
pub(crate) fn combined(errors: &[Error]) -> Error {
    let kind = ErrorKind::most_severe(errors.iter().map(Error::kind)).unwrap_or(ErrorKind::Io);
    let messages: Vec<&str> = errors.iter().map(Error::message).collect();
    Error::new(kind, messages.join("; "))
}

/// The mirror base URLs a kept catalog names (its bytes were authenticated
/// when accepted; whatever a mirror serves is authenticated again).
fn catalog_mirrors(cached: &CachedCatalog) -> Vec<String> {
    Catalog::parse(&cached.bytes)
        .map(|c| c.mirrors().iter().map(|m| m.as_str().to_string()).collect())
        .unwrap_or_default()
}

/// Where to read the endorser's catalog from: its sources, healthy ones
/// first; or, with `--from`, the bundle's publication signed by its key
/// (`None`, with a warning, when the bundle has none).
fn sources_to_try(
    site: &Site,
    endorser: &EndorserRow,
    (key, now): (&PublicKey, Timestamp),
    opts: &SyncOptions,
    report: &mut EndorserReport,
) -> Result<Option<Vec<String>>> {
    let Some(bundle) = &opts.from else {
        return ordered_sources(site, endorser, now).map(Some);
    };
    match crate::bundle::source_for(bundle, key)? {
        Some(dir) => Ok(Some(vec![dir.display().to_string()])),
        None => {
            report.warnings.push(format!(
                "not in bundle {} (no publication signed by key {}); not synced",
                bundle.display(),
                key.key_id
            ));
            Ok(None)
        }
    }
}

/// How long a failed source is tried after the others.
const UNHEALTHY_SECS: i64 = 3600;

/// The endorser's sources, healthy ones first (each group in the order the
/// operator gave).
fn ordered_sources(site: &Site, endorser: &EndorserRow, now: Timestamp) -> Result<Vec<String>> {
    let unhealthy = site
        .state
        .unhealthy_sources(endorser.name.as_str(), &now.to_string())?;
    let (mut healthy, sick): (Vec<&str>, Vec<&str>) = endorser
        .sources()
        .partition(|s| !unhealthy.iter().any(|u| u == s));
    healthy.extend(sick);
    Ok(healthy.into_iter().map(String::from).collect())
}

/// Sources passed over this run are reported (a source serving bytes that
/// do not authenticate is worth knowing about) and tried last for a while;
/// the one that served is healthy again.
fn record_source_health(
    site: &mut Site,
    endorser: &EndorserRow,
    (used, skipped): (Option<&str>, &[(String, Error)]),
    (now, report): (Timestamp, &mut EndorserReport),
) -> Result<()> {
    let until = now
        .checked_add(jiff::SignedDuration::from_secs(UNHEALTHY_SECS))
        .unwrap_or(now)
        .to_string();
    let name = endorser.name.as_str();
    let tx = site.state.transaction()?;
    for (source, error) in skipped {
        let note = format!("source {source} passed over: {}", error.message());
        tx.mark_source_unhealthy(name, source, &until, error.message())?;
        tx.audit("source-failed", Some(name), None, &note)?;
        report.warnings.push(note);
    }
    if let Some(source) = used {
        tx.mark_source_healthy(name, source)?;
    }
    tx.commit()
}

/// The site's copy of the catalog it accepted last under `key`, if kept.
fn cached_copy(
    site: &Site,
    endorser: &EndorserRow,
    key: &PublicKey,
) -> Result<Option<CachedCatalog>> {
    let max = site.config.policy.max_catalog_size;
    Ok(site
        .state
        .serial(key)?
        .and_then(|m| Sha256Digest::from_hex(&m.catalog_sha256))
        .and_then(|sha| store::cached_catalog(site, endorser.name.as_str(), &sha, max)))
}

/// An authenticated catalog, the publication it came from, and the keys the
/// endorser rotated to since the pinned one (empty: none).
struct Fetched {
    publication: Publication,
    authenticated: Authenticated,
    /// Keys rotated to since the pinned one (empty: none).
    rotated: Vec<PublicKey>,
    /// What the server said identifies the signature it sent.
    validators: Validators,
}

/// Authenticate under the pinned key; a catalog signed by another key is
/// accepted only at the end of a chain of rotation statements that starts
/// at the pinned key.
fn authenticate_following_rotations(
    publication: Publication,
    key: &PublicKey,
    limits: (u64, Option<&CachedCatalog>),
) -> Result<Fetched> {
    let followed = vmic_engine::rotation_chain::authenticate_following(&publication, key, limits)?;
    Ok(Fetched {
        publication,
        authenticated: followed.authenticated,
        rotated: followed.rotated,
        validators: followed.validators,
    })
}

/// Pin the key the endorser rotated to (its history carries over), log
/// it and tell the hooks.
fn follow_rotation(
    site: &mut Site,
    endorser: &EndorserRow,
    (pinned, chain): (&PublicKey, &[PublicKey]),
    publication: &Publication,
) -> Result<PublicKey> {
    let newest = chain.last().cloned().unwrap_or_else(|| pinned.clone());
    let name = endorser.name.as_str();
    // The statements are kept, so a bundle can carry the chain to sites
    // still pinned to an older key.
    let statements = vmic_engine::rotation_chain::statement_files(publication, pinned, chain)?;
    store::keep_rotations(site, name, &statements)?;
    crate::trust::rekey(
        site,
        name,
        newest.clone(),
        crate::trust::SerialMemory::Carry,
    )?;
    let steps: Vec<String> = std::iter::once(pinned)
        .chain(chain)
        .map(|k| k.key_id.to_string())
        .collect();
    let reason = format!(
        "key rotated by the endorser's signed statement(s): {}",
        steps.join(" -> ")
    );
    let tx = site.state.transaction()?;
    store::endorser_event(&tx, "key-rotated", HookEvent::KeyRotated, name, &reason)?;
    tx.commit()?;
    Ok(newest)
}

/// No usable fresh catalog: the last accepted one may have run out, and a
/// catalog that is missing may mean the endorser is gone.
fn no_fresh_catalog(
    site: &mut Site,
    endorser: &EndorserRow,
    (key, now): (&PublicKey, Timestamp),
    opts: &SyncOptions,
    error: Error,
    report: &mut EndorserReport,
) -> Result<()> {
    if !opts.dry_run {
        expire_if_stale(site, endorser, key, now, report)?;
        if error.is_absent() {
            return catalog_missing(site, endorser, now, &error, report);
        }
    }
    Err(error.context(format!("endorser {}", endorser.name)))
}

/// A catalog missing before is published again: neither missing nor gone.
fn catalog_found_again(site: &mut Site, endorser: &EndorserRow) -> Result<()> {
    let tx = site.state.transaction()?;
    tx.clear_missing(endorser.name.as_str())?;
    tx.audit(
        "catalog-found",
        Some(endorser.name.as_str()),
        None,
        "the catalog is published again",
    )?;
    tx.commit()
}

/// One line per image whose bytes the endorser changed under its version.
fn rewrite_notes(decisions: &[Decision]) -> Vec<String> {
    decisions
        .iter()
        .filter_map(|d| {
            let old = d.item.rewritten_from?;
            let new = d.record.as_ref().map(|r| r.sha256.to_hex());
            Some(format!(
                "{}: the endorser signed other bytes under this version (sha256 {old} -> {})",
                d.item.image,
                new.unwrap_or_default()
            ))
        })
        .collect()
}

/// Carry out the withdrawals of a plan made after the fetch.
fn withdraw_planned(
    site: &mut Site,
    decisions: &[Decision],
    report: &mut EndorserReport,
) -> Result<()> {
    for d in decisions
        .iter()
        .filter(|d| d.item.action == Action::Withdraw)
    {
        if let Some(row) = &d.withdraw {
            store::withdraw(
                site,
                row,
                ImageState::Revoked,
                &d.item.reason,
                HookEvent::Revoke,
                Decider::Sync,
            )?;
            report.withdrawn.push(row.label());
        }
    }
    Ok(())
}

/// The source says the catalog does not exist (HTTP 404/410, no file).
/// For a while that is an outage like any other (exit 3); once it has
/// lasted `policy.gone_after`, the endorser is reported gone, once (exit 1,
/// `gone` hook, `trust list`), and later runs only warn.
fn catalog_missing(
    site: &mut Site,
    endorser: &EndorserRow,
    now: Timestamp,
    error: &Error,
    report: &mut EndorserReport,
) -> Result<()> {
    let name = endorser.name.as_str();
    let tx = site.state.transaction()?;
    let since = tx.record_missing(name, now)?;
    let missing_for = since
        .parse::<Timestamp>()
        .map_or(0, |t| now.as_second().saturating_sub(t.as_second()));
    if let Some(gone) = &endorser.gone_since {
        tx.commit()?;
        report.warnings.push(format!(
            "gone: its catalog has been missing since {since} (reported {gone}); `vmic trust remove {name}` if it is not coming back ({})",
            error.message()
        ));
        return Ok(());
    }
    let gone_after = site.config.policy.gone_after.0;
    if missing_for < i64::try_from(gone_after).unwrap_or(i64::MAX) {
        tx.commit()?;
        return Err(error.clone().context(format!(
            "endorser {name} (catalog missing since {since}; reported gone after {gone_after}s)"
        )));
    }
    let message = format!(
        "endorser {name} is gone: its catalog has been missing since {since}, longer than policy.gone_after ({gone_after}s): {}",
        error.message()
    );
    tx.mark_gone(name, now)?;
    store::endorser_event(&tx, "endorser-gone", HookEvent::Gone, name, &message)?;
    tx.commit()?;
    Err(Error::verification(message))
}

/// What to do after an expired catalog.
#[derive(Debug, PartialEq, Eq)]
enum Expired {
    /// Use it anyway (`--allow-expired`).
    Proceed,
    /// Import nothing new; the images stay (`on_expired = "keep"`).
    Stop,
}

/// A catalog close to its expiry is news for the operator (and the
/// endorser, who should re-sign it): a warning at every run, the `expiring`
/// hook once per catalog.
fn warn_if_expiring(
    site: &mut Site,
    endorser: &EndorserRow,
    catalog: &Catalog,
    (now, dry_run): (Timestamp, bool),
    report: &mut EndorserReport,
) -> Result<()> {
    let left = catalog.expires().as_second() - now.as_second();
    let window = i64::try_from(site.config.policy.expiry_warning.0).unwrap_or(i64::MAX);
    if left <= 0 || left > window {
        return Ok(());
    }
    let message = format!(
        "catalog serial {} expires at {} (in {}h); the endorser should re-sign it (`vmic resign`)",
        catalog.serial(),
        catalog.expires(),
        left / 3600
    );
    report.warnings.push(message.clone());
    if dry_run {
        return Ok(());
    }
    let name = endorser.name.as_str();
    let tx = site.state.transaction()?;
    if tx.announce_expiry(name, catalog.serial().get())? {
        store::endorser_event(&tx, "expiring", HookEvent::Expiring, name, &message)?;
    }
    tx.commit()
}

/// An expired catalog imports nothing new and its images follow the expiry
/// policy, unless the operator allowed it (loudly). Keeping them is the
/// operator's own choice, so it warns and does not fail every cron run.
fn refuse_or_warn_expired(
    site: &mut Site,
    endorser: &EndorserRow,
    catalog: &Catalog,
    opts: &SyncOptions,
    report: &mut EndorserReport,
) -> Result<Expired> {
    if opts.allow_expired {
        report.warnings.push(format!(
            "CATALOG EXPIRED at {} — used only because of --allow-expired",
            catalog.expires()
        ));
        return Ok(Expired::Proceed);
    }
    if !opts.dry_run {
        let now = opts.now.unwrap_or_else(Timestamp::now);
        expire_images(site, endorser, catalog.expires(), now, report)?;
    }
    if site.config.policy.on_expired == OnExpired::Keep {
        return Ok(Expired::Stop);
    }
    Err(Error::verification(format!(
        "endorser {}: catalog serial {} expired at {}; nothing new is imported (--allow-expired overrides this, loudly)",
        endorser.name,
        catalog.serial(),
        catalog.expires()
    )))
}

/// Why a catalog's place in the endorser's history was refused.
struct Refused {
    error: Error,
    /// Two histories signed by one key: a sign of key compromise.
    forked: bool,
}

/// The catalog's place in the endorser's history, against `memory` (the
/// newest catalog ever accepted from this key). Refused: anything older,
/// other bytes at the same serial, and a fork — the catalog that directly
/// follows the one accepted here naming another predecessor
/// (`previous_sha256`), so the key signed two histories. A catalog that
/// names no predecessor (an endorser who lost OUT_DIR), or a serial further
/// ahead, cannot be checked for a fork.
fn check_history(
    memory: Option<&SerialRow>,
    key: &PublicKey,
    catalog: &Catalog,
    sha256: &Sha256Digest,
    endorser: &EndorserRow,
) -> Result<(), Refused> {
    let Some(memory) = memory else {
        return Ok(());
    };
    let name = &endorser.name;
    let serial = catalog.serial().get();
    let refused = |message: String, forked| {
        Err(Refused {
            error: Error::verification(message),
            forked,
        })
    };
    if serial < memory.highest_serial {
        return refused(
            format!(
                "endorser {name}: catalog serial {serial} is older than serial {} already accepted; refusing a rollback (replayed or stale mirror?)",
                memory.highest_serial
            ),
            false,
        );
    }
    let sha256 = sha256.to_hex();
    if serial == memory.highest_serial && sha256 != memory.catalog_sha256 {
        return refused(
            format!(
                "endorser {name}: catalog serial {serial} has different content (sha256 {sha256}) from the serial {} accepted earlier (sha256 {}); refusing it",
                memory.highest_serial, memory.catalog_sha256
            ),
            false,
        );
    }
    match catalog.previous_sha256() {
        Some(previous)
            if memory.highest_serial.checked_add(1) == Some(serial)
                && previous.to_hex() != memory.catalog_sha256 =>
        {
            refused(
                format!(
                    "endorser {name}: FORK: catalog serial {serial} follows a catalog with sha256 {previous}, but serial {} accepted here has sha256 {}: the key {} signed two histories (compromised?); refusing it",
                    memory.highest_serial, memory.catalog_sha256, key.key_id
                ),
                true,
            )
        }
        _ => Ok(()),
    }
}

/// A refused fork goes into the log and to the hook, not only to stderr.
fn record_fork(site: &mut Site, endorser: &EndorserRow, message: &str) -> Result<()> {
    let name = endorser.name.as_str();
    let tx = site.state.transaction()?;
    store::endorser_event(
        &tx,
        "catalog-refused",
        HookEvent::CatalogRefused,
        name,
        message,
    )?;
    tx.commit()
}

/// Accept the serial and record new decisions, in one transaction.
/// `memory` is the rollback memory the history check read (a sync holds
/// the site lock, so it is still current).
fn apply_decisions(
    site: &mut Site,
    endorser: &EndorserRow,
    key: &PublicKey,
    catalog: &Catalog,
    (memory, sha256): (Option<&SerialRow>, &Sha256Digest),
    decisions: &[Decision],
) -> Result<()> {
    withdraw_before_recording(site, decisions)?;
    let sha256 = sha256.to_hex();
    let serial = catalog.serial().get();
    let site_store = site.store();
    // Only a catalog not seen before is news; cron reruns stay out of the log.
    let seen = memory.is_some_and(|m| m.highest_serial == serial && m.catalog_sha256 == sha256);
    let tx = site.state.transaction()?;
    if !seen {
        tx.accept_serial(key, serial, &sha256, &catalog.expires().to_string())?;
        tx.note_issued(key, serial, &catalog.issued().to_string())?;
        tx.audit(
            "catalog-accepted",
            Some(endorser.name.as_str()),
            None,
            &format!(
                "serial {serial} (sha256 {sha256}), expires {}",
                catalog.expires()
            ),
        )?;
    }
    for d in decisions {
        let Some(row) = &d.record else { continue };
        tx.put_image(row)?;
        let action = match row.state {
            ImageState::Rejected => "rejected",
            ImageState::Pending => "pending",
            _ => "approved",
        };
        tx.audit(
            action,
            Some(row.endorser.as_str()),
            Some(&row.label()),
            &row.reason,
        )?;
        if let Some(old) = &d.item.rewritten_from {
            record_rewrite(&tx, row, old, &site_store)?;
        }
        // A site operator hears of each image that waits for them.
        if row.state == ImageState::Pending && d.item.action == Action::Pending {
            tx.enqueue_hook(
                HookEvent::Pending,
                &store::hook_env(HookEvent::Pending, row, None, &row.reason),
            )?;
        }
        // A withdrawn imported copy already had its `reject` event.
        if row.state == ImageState::Rejected && d.withdraw.is_none() {
            tx.enqueue_hook(
                HookEvent::Reject,
                &store::hook_env(HookEvent::Reject, row, None, &row.reason),
            )?;
        }
    }
    tx.commit()
}

/// Imported images a deny rule now rejects (and old bytes under a changed
/// version with nothing kept) leave the store before anything is recorded.
fn withdraw_before_recording(site: &mut Site, decisions: &[Decision]) -> Result<()> {
    for d in decisions.iter() {
        let (Some(old), Some(new)) = (&d.withdraw, &d.record) else {
            continue;
        };
        if new.state == ImageState::Rejected {
            store::withdraw(
                site,
                old,
                ImageState::Rejected,
                &new.reason,
                HookEvent::Reject,
                Decider::Policy,
            )?;
        } else {
            store::withdraw(
                site,
                old,
                ImageState::Revoked,
                "the endorser changed this version's bytes",
                HookEvent::Revoke,
                Decider::Sync,
            )?;
        }
    }
    Ok(())
}

/// The loud record of other bytes under a known id@version: the log and
/// the `rewrite` hook, saying what happens to the copy in the store.
fn record_rewrite(
    tx: &crate::state::Tx<'_>,
    row: &ImageRow,
    old: &Sha256Digest,
    store_dir: &std::path::Path,
) -> Result<()> {
    let what = match (&row.store_path, row.state) {
        (Some(_), ImageState::Pending) => {
            "pending again; the copy in the store stays until `vmic approve` or `vmic reject`"
        }
        (Some(_), _) => "the new bytes replace the copy in the store once verified",
        (None, _) => "nothing of it was in the store",
    };
    let message = format!(
        "REWRITTEN: the endorser signed other bytes under {} (sha256 {old} -> {}, {} bytes); {what}",
        row.label(),
        row.sha256,
        row.size
    );
    tx.audit(
        "rewritten",
        Some(row.endorser.as_str()),
        Some(&row.label()),
        &message,
    )?;
    let path = row.store_path.as_ref().map(|p| store_dir.join(p));
    tx.enqueue_hook(
        HookEvent::Rewrite,
        &store::hook_env(HookEvent::Rewrite, row, path.as_deref(), &message),
    )
}

/// Fetch, verify and import every approved (or previously quarantined)
/// image of this catalog.
fn fetch_approved(
    site: &mut Site,
    endorser: &EndorserRow,
    catalog: &Catalog,
    source: &Publication,
    (engine, progress): (&Engine, &dyn Progress),
    report: &mut EndorserReport,
) -> Result<()> {
    let rows = site.state.images_of(endorser.name.as_str())?;
    keep_chunk_indexes(site, &rows, catalog, source);
    for row in rows
        .iter()
        .filter(|r| matches!(r.state, ImageState::Approved | ImageState::Quarantined))
    {
        vmic_engine::cancel::check()?;
        let Some(image) = catalog.image(row.id.as_str(), row.version.as_str()) else {
            continue;
        };
        if let Some(wait) = backing_off(site, row)? {
            report.deferred.push(wait);
            continue;
        }
        match fetch_one(site, row, image, source, (engine, progress)) {
            Ok(FetchOutcome::Imported) => {
                let tx = site.state.transaction()?;
                tx.clear_backoff(row)?;
                tx.commit()?;
                report.imported.push(row.label());
            }
            Ok(FetchOutcome::Quarantined(why)) => {
                let first = site.config.policy.quarantine_backoff.0;
                let tx = site.state.transaction()?;
                let after = tx.record_fetch_failure(row, first, Timestamp::now())?;
                tx.commit()?;
                report.quarantined.push(format!(
                    "{}: {why}; next attempt after {after}",
                    row.label()
                ))
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

/// Imported format-2 images whose kept chunk index is gone (`reverify`
/// needs it) get it again; a failure here is retried at the next sync.
fn keep_chunk_indexes(site: &Site, rows: &[ImageRow], catalog: &Catalog, source: &Publication) {
    for row in rows.iter().filter(|r| r.state == ImageState::Imported) {
        let Some(image) = catalog.image(row.id.as_str(), row.version.as_str()) else {
            continue;
        };
        let missing = image
            .chunks
            .indexed()
            .is_some_and(|indexed| !crate::chunks::is_kept(site, indexed));
        if missing {
            let _ = crate::chunks::digests(site, image, Some(source));
        }
    }
}

/// A quarantined image whose last download failed its check is not fetched
/// again before its backoff ends (an operator's `approve` makes it
/// approved, and so fetched at once). Says why when it is skipped.
fn backing_off(site: &Site, row: &ImageRow) -> Result<Option<String>> {
    if row.state != ImageState::Quarantined {
        return Ok(None);
    }
    Ok(site
        .state
        .backoff(row)?
        .filter(|(_, after)| *after > Timestamp::now())
        .map(|(failures, after)| {
            format!(
                "{}: quarantined after {failures} failed download(s); next attempt after {after} (policy.quarantine_backoff; `vmic approve` retries now)",
                row.label()
            )
        }))
}

/// Record one event about an image in the audit log, on its own.
fn audit_image(site: &mut Site, row: &ImageRow, action: &str, message: &str) -> Result<()> {
    let tx = site.state.transaction()?;
    tx.audit(
        action,
        Some(row.endorser.as_str()),
        Some(&row.label()),
        message,
    )?;
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
    source: &Publication,
    (engine, progress): (&Engine, &dyn Progress),
) -> Result<FetchOutcome> {
    progress.working_on(&row.label());
    progress.begin(image.size());
    // Format 2: the chunk index comes first, authenticated and kept; a
    // source serving a bad one is passed over for the next.
    let expected = crate::chunks::digests(site, image, Some(source))?;
    if let Some((copy, from)) = store::reuse_identical(site, row, image, &expected, engine)? {
        if let Some(why) = crate::contents::refusal(site, image, &copy)? {
            store::quarantine(site, row, &copy, &why)?;
            return Ok(FetchOutcome::Quarantined(why));
        }
        store::import(site, row, &copy)?;
        let why =
            format!("identical bytes already held as {from}: linked and verified, not downloaded");
        audit_image(site, row, "reused-local-copy", &why)?;
        return Ok(FetchOutcome::Imported);
    }
    let tmp_dir = site.tmp().join(row.endorser.as_str());
    store::ensure_real_dir(&tmp_dir)?;
    let part = tmp_dir.join(store::part_name(row));
    if std::fs::symlink_metadata(&part).is_ok_and(|m| !m.file_type().is_file()) {
        store::remove_if_present(&part)?;
    }
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
    if let Some(why) = crate::contents::refusal(site, image, &part)? {
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
    let Some(memory) = site.state.serial(key)? else {
        return Ok(());
    };
    match memory.expires.parse::<Timestamp>() {
        Ok(expires) if expires <= now => expire_images(site, endorser, expires, now, report),
        _ => Ok(()),
    }
}

fn expire_images(
    site: &mut Site,
    endorser: &EndorserRow,
    expires: Timestamp,
    now: Timestamp,
    report: &mut EndorserReport,
) -> Result<()> {
    let grace_end = i64::try_from(endorser.grace_secs)
        .ok()
        .and_then(|g| expires.checked_add(jiff::SignedDuration::from_secs(g)).ok())
        .filter(|end| *end > now && endorser.grace_secs > 0);
    if let Some(end) = grace_end {
        // Use case 1.5.1: loud, but the images stay until the grace ends.
        let warning = format!(
            "CATALOG EXPIRED at {expires}; its images are kept in the endorser's grace period until {end} (trust edit --grace); nothing new is imported"
        );
        let tx = site.state.transaction()?;
        tx.audit(
            "expired-grace",
            Some(endorser.name.as_str()),
            None,
            &warning,
        )?;
        tx.commit()?;
        report.warnings.push(warning);
        return Ok(());
    }
    let expires = expires.to_string();
    let existing = site.state.images_of(endorser.name.as_str())?;
    match plan_expiry(&existing, &expires, site.config.policy.on_expired) {
        ExpiryPlan::Keep => {
            let warning = format!(
                "catalog expired at {expires}; nothing new is imported, and the images are kept by site policy (on_expired = \"keep\")"
            );
            let tx = site.state.transaction()?;
            tx.audit("expired-kept", Some(endorser.name.as_str()), None, &warning)?;
            tx.commit()?;
            report.warnings.push(warning);
        }
        ExpiryPlan::Withdraw(rows, reason) => {
            for row in rows {
                store::withdraw(
                    site,
                    &row,
                    ImageState::Expired,
                    &reason,
                    HookEvent::Expire,
                    Decider::Sync,
                )?;
                report.withdrawn.push(row.label());
            }
        }
    }
    Ok(())
}
