//! The site's own decisions: manual approval and rejection (VMIC use cases
//! 3.3–3.5), and re-verification of the store against the signed digests.

use serde::Serialize;

use vmic_format::ids::{EndorserName, ImageId, InvalidValue, Version};

use crate::error::{Error, Result};
use crate::hashing::{CheckItem, Engine};
use crate::model::{Decider, HookEvent, ImageState};
use crate::site::Site;
use crate::state::ImageRow;
use crate::store;

/// Which images an operator means: `[ENDORSER/]ID[@VERSION]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    /// Only this endorser's images.
    pub endorser: Option<EndorserName>,
    /// The image id.
    pub id: ImageId,
    /// One version, or every version.
    pub version: Option<Version>,
}

impl Selector {
    /// Parse `[ENDORSER/]ID[@VERSION]`; `endorser` (from `--endorser`) must
    /// agree with an endorser named in the text.
    pub fn parse(text: &str, endorser: Option<&str>) -> Result<Selector> {
        let invalid = |e: InvalidValue| Error::input(e.0);
        let (named, rest) = match text.split_once('/') {
            Some((e, rest)) => (Some(e), rest),
            None => (None, text),
        };
        let (id, version) = match rest.split_once('@') {
            Some((id, v)) => (id, Some(v)),
            None => (rest, None),
        };
        let endorser = match (named, endorser) {
            (Some(a), Some(b)) if a != b => {
                return Err(Error::input(format!(
                    "{text} names endorser {a} but --endorser says {b}"
                )));
            }
            (a, b) => a
                .or(b)
                .map(EndorserName::parse)
                .transpose()
                .map_err(invalid)?,
        };
        Ok(Selector {
            endorser,
            id: ImageId::parse(id).map_err(invalid)?,
            version: version.map(Version::parse).transpose().map_err(invalid)?,
        })
    }

    fn matches(&self, row: &ImageRow) -> bool {
        row.id == self.id
            && self.version.as_ref().is_none_or(|v| *v == row.version)
            && self.endorser.as_ref().is_none_or(|e| *e == row.endorser)
    }
}

/// What an approval or rejection did.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Review {
    /// Images whose state changed, as `ENDORSER/ID@VERSION`.
    pub changed: Vec<String>,
    /// Images already in the state asked for (nothing to do), likewise.
    pub unchanged: Vec<String>,
}

/// The rows `selector` means. An id that several endorsers publish must be
/// scoped to one: a hostile endorser's image of the same name must never be
/// approved along with the one the operator meant.
fn select(site: &Site, selector: &Selector, text: &str) -> Result<Vec<ImageRow>> {
    let rows: Vec<ImageRow> = site
        .state
        .images()?
        .into_iter()
        .filter(|r| selector.matches(r))
        .collect();
    if rows.is_empty() {
        return Err(Error::input(format!(
            "no image {text} is known (see `vmic images`)"
        )));
    }
    let endorsers: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.endorser.as_str()).collect();
    if selector.endorser.is_none() && endorsers.len() > 1 {
        let names: Vec<&str> = endorsers.into_iter().collect();
        let scoped: Vec<String> = names.iter().map(|e| format!("{e}/{text}")).collect();
        return Err(Error::input(format!(
            "{text} matches images of several endorsers ({}); name one: {} (or --endorser NAME)",
            names.join(", "),
            scoped.join(" or ")
        )));
    }
    Ok(rows)
}

/// What the site's deny rules say of each row's signed entry.
fn denials(site: &Site, rows: &[ImageRow]) -> Result<Vec<Option<String>>> {
    rows.iter()
        .map(|row| Ok(site.config.denial(&row.image()?)))
        .collect()
}

fn full_label(row: &ImageRow) -> String {
    format!("{}/{}", row.endorser, row.label())
}

/// Split `rows` into those that can move (`from`), those already where
/// the operator wants them (`done`), and refuse when neither is left.
fn changeable(
    rows: Vec<ImageRow>,
    from: &[ImageState],
    done: &[ImageState],
    text: &str,
) -> Result<(Vec<ImageRow>, Vec<String>)> {
    let unchanged: Vec<String> = rows
        .iter()
        .filter(|r| done.contains(&r.state))
        .map(full_label)
        .collect();
    let (movable, rest): (Vec<ImageRow>, Vec<ImageRow>) =
        rows.into_iter().partition(|r| from.contains(&r.state));
    if movable.is_empty() && unchanged.is_empty() {
        let found: Vec<String> = rest
            .iter()
            .map(|r| format!("{} is {}", full_label(r), r.state))
            .collect();
        return Err(Error::input(format!(
            "no image {text} can change that way ({})",
            found.join(", ")
        )));
    }
    Ok((movable, unchanged))
}

/// Approve pending (or manually rejected) images; the next sync imports
/// them. A quarantined image is tried again at the next sync, whatever its
/// backoff. Images already approved or imported are left as they are.
pub fn approve(site: &mut Site, text: &str, endorser: Option<&str>) -> Result<Review> {
    approve_as(site, text, endorser, DenyRules::Respect)
}

/// Whether `approve` may overrule the site's deny rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyRules {
    /// An image a deny rule rejects is refused, naming the rule.
    Respect,
    /// It is approved anyway, and the log says over which rule
    /// (`vmic approve --override`).
    Override,
}

/// [`approve`], saying what to do with images a deny rule rejects.
pub fn approve_as(
    site: &mut Site,
    text: &str,
    endorser: Option<&str>,
    deny_rules: DenyRules,
) -> Result<Review> {
    let selector = Selector::parse(text, endorser)?;
    let rows = select(site, &selector, text)?;
    let (rows, unchanged) = changeable(
        rows,
        &[
            ImageState::Pending,
            ImageState::Rejected,
            ImageState::Quarantined,
        ],
        &[ImageState::Approved, ImageState::Imported],
        text,
    )?;
    let denials = denials(site, &rows)?;
    if deny_rules == DenyRules::Respect
        && let Some((row, why)) = rows
            .iter()
            .zip(&denials)
            .find_map(|(r, d)| Some((r, d.as_ref()?)))
    {
        return Err(Error::input(format!(
            "{} is {why}; approve it anyway with --override (the log records it)",
            full_label(row)
        )));
    }
    let tx = site.state.transaction()?;
    for (row, denial) in rows.iter().zip(&denials) {
        // A rewritten version's old copy stays until the new one arrives.
        tx.set_state(
            row,
            ImageState::Approved,
            "approved by the site",
            Decider::Manual,
            row.store_path.as_deref(),
        )?;
        tx.clear_backoff(row)?;
        let detail = match denial {
            Some(why) => format!("approved by the site operator with --override, over: {why}"),
            None => "approved by the site operator".to_string(),
        };
        tx.audit(
            "approved",
            Some(row.endorser.as_str()),
            Some(&row.label()),
            &detail,
        )?;
    }
    tx.commit()?;
    Ok(Review {
        changed: rows.iter().map(full_label).collect(),
        unchanged,
    })
}

/// Reject images; imported ones are withdrawn from the store. Images already
/// rejected are left as they are.
pub fn reject(site: &mut Site, text: &str, endorser: Option<&str>) -> Result<Review> {
    let selector = Selector::parse(text, endorser)?;
    let rows = select(site, &selector, text)?;
    let (rows, unchanged) = changeable(
        rows,
        &[
            ImageState::Pending,
            ImageState::Approved,
            ImageState::Imported,
            ImageState::Quarantined,
        ],
        &[ImageState::Rejected],
        text,
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
    Ok(Review {
        changed: rows.iter().map(full_label).collect(),
        unchanged,
    })
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
    /// Those that could not be checked (a format-2 image whose kept chunk
    /// index is gone), with why.
    pub unchecked: Vec<String>,
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
    let mut checked_rows = Vec::new();
    let mut unchecked = Vec::new();
    for row in &rows {
        let image = row.image()?;
        let rel = row
            .store_path
            .clone()
            .unwrap_or_else(|| store::store_rel(row));
        match crate::chunks::digests(site, &image, None) {
            Ok(expected) => {
                items.push(CheckItem {
                    name: row.label(),
                    path: site.store().join(rel),
                    expected,
                });
                checked_rows.push(row.clone());
            }
            Err(e) => unchecked.push(format!("{}: {}", row.label(), e.message())),
        }
    }
    let (outcomes, _) = engine.check_files(&items, progress);
    let rows = checked_rows;
    let mut report = Reverify {
        checked: rows.len(),
        ok: Vec::new(),
        quarantined: Vec::new(),
        unchecked,
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
    use vmic_format::ids::EndorserName;

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
    fn selectors_are_parsed_into_endorsers_ids_and_versions() {
        let s = Selector::parse("lab/centos-9@2026.1", None).unwrap();
        assert_eq!(s.endorser.unwrap().as_str(), "lab");
        assert_eq!(
            (s.id.as_str(), s.version.unwrap().as_str()),
            ("centos-9", "2026.1")
        );
        let s = Selector::parse("centos", Some("lab")).unwrap();
        assert_eq!(s.endorser.unwrap().as_str(), "lab");
        assert!(s.version.is_none());
        assert!(Selector::parse("lab/a", Some("lab")).is_ok());
        for (bad, flag) in [
            ("../x", None),
            ("a@", None),
            ("@1", None),
            ("a b", None),
            ("x/a", Some("lab")),
            ("a/b/c", None),
        ] {
            let err = Selector::parse(bad, flag).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Input, "{bad}");
        }
    }

    #[test]
    fn approving_an_id_two_endorsers_publish_needs_the_endorser_named() {
        let c = catalog(&[("a", "1", b"1")], &[]);
        let ours = row(&c, "a", "1", ImageState::Pending, Decider::Policy);
        let mut hostile = ours.clone();
        hostile.endorser = EndorserName::parse("evil").unwrap();
        let (_dir, mut site) = site_with(&[ours, hostile]);
        let err = approve(&mut site, "a@1", None).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Input);
        assert!(
            err.message().contains("several endorsers (evil, lab)"),
            "{err}"
        );
        assert!(
            site.state
                .images()
                .unwrap()
                .iter()
                .all(|r| r.state == ImageState::Pending)
        );
        let done = approve(&mut site, "lab/a@1", None).unwrap();
        assert_eq!(done.changed, ["lab/a@1"]);
        let evil = site.state.images_of("evil").unwrap();
        assert_eq!(
            evil[0].state,
            ImageState::Pending,
            "the other endorser's image is untouched"
        );
        assert_eq!(
            reject(&mut site, "a", Some("evil")).unwrap().changed,
            ["evil/a@1"]
        );
    }

    #[test]
    fn approve_moves_pending_images_and_names_what_cannot_change() {
        let c = catalog(&[("a", "1", b"1"), ("a", "2", b"2"), ("b", "1", b"3")], &[]);
        let (_dir, mut site) = site_with(&[
            row(&c, "a", "1", ImageState::Pending, Decider::Policy),
            row(&c, "a", "2", ImageState::Pending, Decider::Policy),
            row(&c, "b", "1", ImageState::Imported, Decider::Policy),
        ]);
        assert_eq!(
            approve(&mut site, "a@2", None).unwrap().changed,
            ["lab/a@2"]
        );
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
        // Approving what is already imported is a no-op, not an error.
        let again = approve(&mut site, "b", None).unwrap();
        assert_eq!(
            (again.changed.len(), again.unchanged.as_slice()),
            (0, &["lab/b@1".to_string()][..])
        );
        let quarantined = row(&c, "b", "1", ImageState::Quarantined, Decider::Verification);
        let tx = site.state.transaction().unwrap();
        tx.put_image(&quarantined).unwrap();
        tx.commit().unwrap();
        // A quarantined image is approved to be fetched again at once.
        let retry = approve(&mut site, "b", None).unwrap();
        assert_eq!(retry.changed, ["lab/b@1"]);
        let b = site.state.images_of("lab").unwrap();
        let b = b.iter().find(|r| r.id == *"b").unwrap();
        assert_eq!(b.state, ImageState::Approved);
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
        assert_eq!(reject(&mut site, "a", None).unwrap().changed, ["lab/a@1"]);
        let again = reject(&mut site, "a", None).unwrap();
        assert!(again.changed.is_empty() && again.unchanged == ["lab/a@1"]);
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
