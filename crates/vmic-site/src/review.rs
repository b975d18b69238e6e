//! The site's own decisions: manual approval and rejection (VMIC use cases
//! 3.3–3.5), and re-verification of the store against the signed digests.

use serde::Serialize;

use vmic_format::ids::{ImageId, InvalidValue, Version};

use crate::error::{Error, Result};
use crate::hashing::{CheckItem, Engine};
use crate::model::{Decider, HookEvent, ImageState};
use crate::site::Site;
use crate::state::ImageRow;
use crate::store;

/// `ID` or `ID@VERSION`.
pub fn parse_selector(text: &str) -> Result<(ImageId, Option<Version>)> {
    let (id, version) = match text.split_once('@') {
        Some((id, v)) => (id, Some(v)),
        None => (text, None),
    };
    let invalid = |e: InvalidValue| Error::input(e.0);
    let id = ImageId::parse(id).map_err(invalid)?;
    let version = version.map(Version::parse).transpose().map_err(invalid)?;
    Ok((id, version))
}

fn select(
    site: &Site,
    selector: &str,
    endorser: Option<&str>,
    states: &[ImageState],
) -> Result<Vec<ImageRow>> {
    let (id, version) = parse_selector(selector)?;
    let rows: Vec<ImageRow> = site
        .state
        .images()?
        .into_iter()
        .filter(|r| r.id == id && version.as_ref().is_none_or(|v| *v == r.version))
        .filter(|r| endorser.is_none_or(|e| r.endorser == *e))
        .collect();
    if rows.is_empty() {
        return Err(Error::input(format!(
            "no image {selector} is known (see `vmic images`)"
        )));
    }
    let matching: Vec<ImageRow> = rows
        .iter()
        .filter(|r| states.contains(&r.state))
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
    let rows = select(
        site,
        selector,
        endorser,
        &[ImageState::Pending, ImageState::Rejected],
    )?;
    let tx = site.state.transaction()?;
    for row in &rows {
        tx.set_state(
            row,
            ImageState::Approved,
            "approved by the site",
            Decider::Manual,
            None,
        )?;
        tx.audit(
            "approved",
            Some(row.endorser.as_str()),
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
        &[
            ImageState::Pending,
            ImageState::Approved,
            ImageState::Imported,
            ImageState::Quarantined,
        ],
    )?;
    for row in &rows {
        store::withdraw(
            site,
            row,
            ImageState::Rejected,
            "rejected by the site operator",
            HookEvent::Reject,
            Decider::Manual,
        )?;
    }
    crate::hooks::flush_outbox(site)?;
    Ok(rows.iter().map(ImageRow::label).collect())
}

/// What `vmic reverify` found.
#[derive(Debug, Serialize)]
pub struct Reverify {
    /// Imported images checked.
    pub checked: usize,
    /// Those intact.
    pub ok: Vec<String>,
    /// Those tampered with at rest, now quarantined, with why.
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
        .filter(|r| r.state == ImageState::Imported)
        .collect();
    let mut items = Vec::new();
    for row in &rows {
        let image = row.image()?;
        let rel = row
            .store_path
            .clone()
            .unwrap_or_else(|| store::store_rel(row));
        items.push(CheckItem {
            name: row.label(),
            path: site.store().join(rel),
            expected: image.digests,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{catalog, row};

    fn site_with(rows: &[ImageRow]) -> (tempfile::TempDir, Site) {
        let dir = tempfile::tempdir().unwrap();
        let mut site = Site::init(&dir.path().join("site")).unwrap();
        let tx = site.state.transaction().unwrap();
        for r in rows {
            tx.put_image(r).unwrap();
        }
        tx.commit().unwrap();
        (dir, site)
    }

    #[test]
    fn selectors_are_parsed_into_ids_and_versions() {
        let (id, version) = parse_selector("centos-9@2026.1").unwrap();
        assert_eq!(
            (id.as_str(), version.unwrap().as_str()),
            ("centos-9", "2026.1")
        );
        assert!(parse_selector("centos").unwrap().1.is_none());
        for bad in ["../x", "a@", "@1", "a b"] {
            let err = parse_selector(bad).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Input, "{bad}");
        }
    }

    #[test]
    fn approve_moves_pending_images_and_names_what_cannot_change() {
        let c = catalog(&[("a", "1", b"1"), ("a", "2", b"2"), ("b", "1", b"3")], &[]);
        let (_dir, mut site) = site_with(&[
            row(&c, "a", "1", ImageState::Pending, Decider::Policy),
            row(&c, "a", "2", ImageState::Pending, Decider::Policy),
            row(&c, "b", "1", ImageState::Imported, Decider::Policy),
        ]);
        assert_eq!(approve(&mut site, "a@2", None).unwrap(), ["a@2"]);
        let rows = site.state.images().unwrap();
        let state_of = |v: &str| {
            rows.iter()
                .find(|r| r.id == *"a" && r.version == *v)
                .unwrap()
                .clone()
        };
        assert_eq!(state_of("2").state, ImageState::Approved);
        assert_eq!(state_of("2").decided_by, Decider::Manual);
        assert_eq!(state_of("1").state, ImageState::Pending);
        let err = approve(&mut site, "b", None).unwrap_err();
        assert!(err.message().contains("b@1 is imported"), "{err}");
        let err = approve(&mut site, "nope", None).unwrap_err();
        assert!(err.message().contains("no image nope"), "{err}");
        let err = approve(&mut site, "a", Some("other")).unwrap_err();
        assert!(err.message().contains("no image a"), "{err}");
    }

    #[test]
    fn reject_withdraws_and_sticks_as_a_manual_decision() {
        let c = catalog(&[("a", "1", b"1")], &[]);
        let (_dir, mut site) =
            site_with(&[row(&c, "a", "1", ImageState::Approved, Decider::Policy)]);
        assert_eq!(reject(&mut site, "a", None).unwrap(), ["a@1"]);
        let r = &site.state.images().unwrap()[0];
        assert_eq!(
            (r.state, r.decided_by),
            (ImageState::Rejected, Decider::Manual)
        );
        assert!(
            site.state
                .audit()
                .unwrap()
                .iter()
                .any(|a| a.action == "reject")
        );
    }
}
