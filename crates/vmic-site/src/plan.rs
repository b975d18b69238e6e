//! Planning a sync: a pure function of (the rows the site holds for one
//! endorser, that endorser's authenticated catalog, site policy) that
//! returns what should happen to every image. No database, no files, no
//! clock: `apply` in [`crate::sync`] carries the decisions out, and the
//! unit tests below exercise every rule on its own.

use serde::Serialize;

use vmic_format::catalog::{Catalog, Image};
use vmic_format::ids::EndorserName;
use vmic_format::image_format::FormatName;

use crate::config::{DenyRule, OnExpired};
use crate::model::{ApproveMode, Decider, ImageState};
use crate::state::ImageRow;

/// What happens to one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Fetch, verify, import.
    Import,
    /// Wait for the operator.
    Pending,
    /// Denied by policy.
    Reject,
    /// Take out of use.
    Withdraw,
    /// Nothing changes.
    Keep,
}

/// One intended change, as `--dry-run` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanItem {
    /// What happens.
    pub action: Action,
    /// `id@version`.
    pub image: String,
    /// Declared size in bytes.
    pub size: u64,
    /// Why.
    pub reason: String,
}

/// One decision with what `apply` needs to carry it out.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The change, for reports.
    pub item: PlanItem,
    /// A stored image to take out of use (revoked, replaced, dropped, or
    /// its bytes changed under the same version).
    pub withdraw: Option<ImageRow>,
    /// A new or re-decided row to record.
    pub record: Option<ImageRow>,
}

/// The site policy that planning applies.
pub struct PlanPolicy<'a> {
    /// How this endorser's new images are approved.
    pub approve: ApproveMode,
    /// Deny rules, first match wins.
    pub deny: &'a [DenyRule],
}

impl PlanPolicy<'_> {
    fn denial(&self, image: &Image) -> Option<String> {
        self.deny.iter().find_map(|rule| rule.rejects(image))
    }
}

/// Decide what happens to every image of `endorser`: the ones `catalog`
/// lists, and the ones the site holds that it no longer lists.
pub fn plan(
    existing: &[ImageRow],
    endorser: &EndorserName,
    catalog: &Catalog,
    policy: &PlanPolicy,
) -> Vec<Decision> {
    let mut out: Vec<Decision> = catalog
        .images()
        .iter()
        .map(|image| {
            let row = existing
                .iter()
                .find(|r| r.id == image.id && r.version == image.version);
            plan_listed(image, row, endorser, policy)
        })
        .collect();
    out.extend(
        existing
            .iter()
            .filter(|r| r.state != ImageState::Revoked)
            .filter(|r| catalog.image(r.id.as_str(), r.version.as_str()).is_none())
            .map(|r| plan_unlisted(r, catalog)),
    );
    out
}

fn keep(image: &Image, action: Action, reason: String) -> Decision {
    Decision {
        item: PlanItem {
            action,
            image: image.label(),
            size: image.size(),
            reason,
        },
        withdraw: None,
        record: None,
    }
}

/// An image the catalog lists.
fn plan_listed(
    image: &Image,
    row: Option<&ImageRow>,
    endorser: &EndorserName,
    policy: &PlanPolicy,
) -> Decision {
    let same_bytes = row.is_some_and(|r| r.sha256 == image.sha256 && r.size == image.size());
    let kept_state = row.filter(|_| same_bytes).map(|r| r.state);
    match (kept_state, row) {
        (Some(ImageState::Imported), _) => keep(image, Action::Keep, "already imported".into()),
        (Some(ImageState::Approved | ImageState::Quarantined), _) => {
            keep(image, Action::Import, "approved; fetching".into())
        }
        (Some(ImageState::Rejected), Some(r)) if r.decided_by == Decider::Manual => keep(
            image,
            Action::Keep,
            format!("rejected by the site: {}", r.reason),
        ),
        (Some(ImageState::Pending), _) if policy.denial(image).is_none() => {
            keep(image, Action::Pending, "waiting for `vmic approve`".into())
        }
        // New, changed bytes under the same version, re-listed after a
        // revocation or expiry, or a policy decision to re-evaluate.
        _ => decide_afresh(image, row, kept_state, endorser, policy),
    }
}

fn decide_afresh(
    image: &Image,
    row: Option<&ImageRow>,
    kept_state: Option<ImageState>,
    endorser: &EndorserName,
    policy: &PlanPolicy,
) -> Decision {
    let (state, reason, action) = match policy.denial(image) {
        Some(why) => (ImageState::Rejected, why, Action::Reject),
        None if policy.approve == ApproveMode::Manual => (
            ImageState::Pending,
            "waiting for `vmic approve`".to_string(),
            Action::Pending,
        ),
        None => (
            ImageState::Approved,
            "approved automatically".to_string(),
            Action::Import,
        ),
    };
    if kept_state == Some(state) && row.is_some_and(|r| r.reason == reason) {
        // Same bytes, same decision as last time: nothing to record again.
        return keep(image, Action::Keep, reason);
    }
    let mut decision = keep(image, action, reason.clone());
    decision.record = Some(new_row(endorser, image, state, &reason));
    // Different bytes under an imported version: the old file goes.
    decision.withdraw = row.filter(|r| r.state == ImageState::Imported).cloned();
    decision
}

/// A stored image the catalog no longer lists: revoked, replaced or dropped.
fn plan_unlisted(row: &ImageRow, catalog: &Catalog) -> Decision {
    let revocation = catalog.revocation_of(row.id.as_str(), row.version.as_str());
    let newer = catalog.images().iter().find(|i| i.id == row.id);
    let reason = match (revocation, newer) {
        (Some(r), _) => format!("revoked by the endorser: {}", r.reason),
        (None, Some(n)) => format!("replaced by {}", n.label()),
        (None, None) => "no longer in the endorser's catalog".into(),
    };
    Decision {
        item: PlanItem {
            action: Action::Withdraw,
            image: row.label(),
            size: row.size,
            reason,
        },
        withdraw: Some(row.clone()),
        record: None,
    }
}

/// The row recording a policy decision about `image`.
pub fn new_row(
    endorser: &EndorserName,
    image: &Image,
    state: ImageState,
    reason: &str,
) -> ImageRow {
    ImageRow {
        endorser: endorser.clone(),
        id: image.id.clone(),
        version: image.version.clone(),
        state,
        reason: reason.into(),
        decided_by: Decider::Policy,
        size: image.size(),
        sha256: image.sha256,
        format: FormatName::clone(&image.format),
        entry: serde_json::to_string(image).unwrap_or_default(),
        store_path: None,
        updated_at: String::new(),
    }
}

/// What an expired catalog means for the images of its endorser.
#[derive(Debug, PartialEq)]
pub enum ExpiryPlan {
    /// Site policy keeps them (`on_expired = "keep"`); say so loudly.
    Keep,
    /// These images are withdrawn, for this reason.
    Withdraw(Vec<ImageRow>, String),
}

/// Decide what happens to `existing` when the catalog that lists them
/// expired at `expires` (RFC 3339).
pub fn plan_expiry(existing: &[ImageRow], expires: &str, on_expired: OnExpired) -> ExpiryPlan {
    if on_expired == OnExpired::Keep {
        return ExpiryPlan::Keep;
    }
    let in_use = existing
        .iter()
        .filter(|r| {
            matches!(
                r.state,
                ImageState::Imported
                    | ImageState::Approved
                    | ImageState::Pending
                    | ImageState::Quarantined
            )
        })
        .cloned()
        .collect();
    ExpiryPlan::Withdraw(
        in_use,
        format!("the endorser's catalog expired at {expires}"),
    )
}
