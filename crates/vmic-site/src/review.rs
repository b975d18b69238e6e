//! The site's own decisions: manual approval and rejection (VMIC use cases
//! 3.3–3.5), and re-verification of the store against the signed digests.

use serde::Serialize;

use crate::catalog::Image;
use crate::error::{Error, Result};
use crate::hashing::{CheckItem, Engine};
use crate::site::Site;
use crate::state::{ImageRow, image_state as st};
use crate::store;

/// `ID` or `ID@VERSION`.
pub fn parse_selector(text: &str) -> Result<(String, Option<String>)> {
    let (id, version) = match text.split_once('@') {
        Some((id, v)) => (id, Some(v.to_string())),
        None => (text, None),
    };
    crate::catalog::check_token("id", id).map_err(Error::input)?;
    if let Some(v) = &version {
        crate::catalog::check_token("version", v).map_err(Error::input)?;
    }
    Ok((id.into(), version))
}

fn select(
    site: &Site,
    selector: &str,
    endorser: Option<&str>,
    states: &[&str],
) -> Result<Vec<ImageRow>> {
    let (id, version) = parse_selector(selector)?;
    let rows: Vec<ImageRow> = site
        .state
        .images()?
        .into_iter()
        .filter(|r| r.id == id && version.as_ref().is_none_or(|v| *v == r.version))
        .filter(|r| endorser.is_none_or(|e| e == r.endorser))
        .collect();
    if rows.is_empty() {
        return Err(Error::input(format!(
            "no image {selector} is known (see `vmic images`)"
        )));
    }
    let matching: Vec<ImageRow> = rows
        .iter()
        .filter(|r| states.contains(&r.state.as_str()))
        .cloned()
        .collect();
    if matching.is_empty() {
        let found: Vec<String> = rows
            .iter()
            .map(|r| format!("{} is {}", r.label(), r.state))
            .collect();
        return Err(Error::input(format!(
            "no image {selector} can change that way ({})",
            found.join(", ")
        )));
    }
    Ok(matching)
}

/// Approve pending (or manually rejected) images; the next sync imports them.
pub fn approve(site: &mut Site, selector: &str, endorser: Option<&str>) -> Result<Vec<String>> {
    let rows = select(site, selector, endorser, &[st::PENDING, st::REJECTED])?;
    let tx = site.state.transaction()?;
    for row in &rows {
        tx.set_state(row, st::APPROVED, "approved by the site", "manual", None)?;
        tx.audit(
            "approved",
            Some(&row.endorser),
            Some(&row.label()),
            "approved by the site operator",
        )?;
    }
    tx.commit()?;
    Ok(rows.iter().map(ImageRow::label).collect())
}

/// Reject images; imported ones are withdrawn from the store.
pub fn reject(site: &mut Site, selector: &str, endorser: Option<&str>) -> Result<Vec<String>> {
    let rows = select(
        site,
        selector,
        endorser,
        &[st::PENDING, st::APPROVED, st::IMPORTED, st::QUARANTINED],
    )?;
    for row in &rows {
        store::withdraw(
            site,
            row,
            st::REJECTED,
            "rejected by the site operator",
            "reject",
            "manual",
        )?;
    }
    crate::hooks::flush_outbox(site)?;
    Ok(rows.iter().map(ImageRow::label).collect())
}

#[derive(Debug, Serialize)]
pub struct Reverify {
    pub checked: usize,
    pub ok: Vec<String>,
    pub quarantined: Vec<String>,
}

/// Re-hash every imported image against its signed chunk digests; tampering
/// at rest is quarantined and reported.
pub fn reverify(
    site: &mut Site,
    engine: &Engine,
    progress: &dyn crate::hashing::Progress,
) -> Result<Reverify> {
    let rows: Vec<ImageRow> = site
        .state
        .images()?
        .into_iter()
        .filter(|r| r.state == st::IMPORTED)
        .collect();
    let mut items = Vec::new();
    for row in &rows {
        let image: Image = serde_json::from_str(&row.entry).map_err(|e| {
            Error::io_failure(format!(
                "site database: entry of {} is corrupt: {e}",
                row.label()
            ))
        })?;
        let rel = row
            .store_path
            .clone()
            .unwrap_or_else(|| store::store_rel(row));
        items.push(CheckItem {
            name: row.label(),
            path: site.store().join(rel),
            size: image.size,
            chunk_size: image.chunk_size,
            chunks: image.chunks,
        });
    }
    let (outcomes, _) = engine.check_files(&items, progress);
    let mut report = Reverify {
        checked: rows.len(),
        ok: Vec::new(),
        quarantined: Vec::new(),
    };
    for ((row, item), outcome) in rows.iter().zip(&items).zip(outcomes) {
        match outcome.problems.first() {
            None => report.ok.push(row.label()),
            Some(first) => {
                let why = format!("tampered at rest: {}", first.describe());
                store::quarantine(site, row, &item.path, &why)?;
                report.quarantined.push(format!("{}: {why}", row.label()));
            }
        }
    }
    crate::hooks::flush_outbox(site)?;
    Ok(report)
}
