//! Planning a sync: a pure function of (the rows the site holds for one
//! endorser, that endorser's authenticated catalog, site policy) that
//! returns what should happen to every image. No database, no files, no
//! clock: `apply` in [`crate::sync`] carries the decisions out, and the
//! unit tests below exercise every rule on its own.

use std::collections::HashMap;

use serde::Serialize;

use vmic_format::catalog::{Catalog, Image};
use vmic_format::digest::Sha256Digest;
use vmic_format::ids::EndorserName;
use vmic_format::image_format::FormatName;

#[cfg(test)]
use crate::config::DenyValue;
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
    /// Set when the endorser signed other bytes under this id@version than
    /// the site recorded before: the SHA-256 the site had.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewritten_from: Option<Sha256Digest>,
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
    /// Bytes in use at this site (`policy.carry_approval`): a manual
    /// endorser's image with identical bytes needs no second approval.
    pub approved_bytes: Option<&'a ApprovedBytes>,
}

/// (signed SHA-256, size) of every image in use at the site → the image
/// that holds them, as `endorser/id@version`.
pub type ApprovedBytes = HashMap<(Sha256Digest, u64), String>;

/// The bytes in use among `rows`.
pub fn approved_bytes(rows: &[ImageRow]) -> ApprovedBytes {
    rows.iter()
        .filter(|r| r.state == ImageState::Imported)
        .map(|r| ((r.sha256, r.size), format!("{}/{}", r.endorser, r.label())))
        .collect()
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
    // Maps, not nested scans: the work stays linear in rows + images.
    let stored: HashMap<(&str, &str), &ImageRow> = existing
        .iter()
        .map(|r| ((r.id.as_str(), r.version.as_str()), r))
        .collect();
    let mut out: Vec<Decision> = catalog
        .images()
        .iter()
        .map(|image| {
            let row = stored.get(&(image.id.as_str(), image.version.as_str()));
            plan_listed(image, row.copied(), endorser, policy)
        })
        .collect();
    out.extend(
        existing
            .iter()
            .filter(|r| r.state != ImageState::Revoked)
            .filter(|r| catalog.image(r.id.as_str(), r.version.as_str()).is_none())
            .map(|r| plan_unlisted(r, catalog, &stored)),
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
            rewritten_from: None,
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
    // The operator's decisions stand: a rejection whatever bytes the
    // endorser signs under that id@version later, an approval over the deny
    // rules. Policy decisions are re-evaluated on every sync.
    let by_operator = row.is_some_and(|r| r.decided_by == Decider::Manual);
    let denied = !by_operator && policy.denial(image).is_some();
    match (kept_state, row) {
        (_, Some(r)) if r.state == ImageState::Rejected && by_operator => keep(
            image,
            Action::Keep,
            format!("rejected by the site: {}", r.reason),
        ),
        (Some(ImageState::Imported), _) if !denied => {
            keep(image, Action::Keep, "already imported".into())
        }
        (Some(ImageState::Approved | ImageState::Quarantined), _) if !denied => {
            keep(image, Action::Import, "approved; fetching".into())
        }
        (Some(ImageState::Pending), _) if !denied => {
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
        None if policy.approve == ApproveMode::Manual => {
            match policy
                .approved_bytes
                .and_then(|a| a.get(&(image.sha256, image.size())))
            {
                Some(holder) => (
                    ImageState::Approved,
                    format!("same bytes as {holder}, in use here (policy.carry_approval)"),
                    Action::Import,
                ),
                None => (
                    ImageState::Pending,
                    "waiting for `vmic approve`".to_string(),
                    Action::Pending,
                ),
            }
        }
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
    let mut record = new_row(endorser, image, state, &reason);
    let rewritten = row.filter(|r| r.sha256 != image.sha256 || r.size != image.size());
    decision.item.rewritten_from = rewritten.map(|r| r.sha256);
    match rewritten.and_then(|r| r.store_path.as_ref()) {
        // Other bytes under a version in use: the old copy stays (still
        // owned by the row) until the new bytes are imported over it, or
        // the operator decides on a manual site. No gap.
        Some(old_copy) if state != ImageState::Rejected => {
            record.store_path = Some(old_copy.clone());
        }
        // An imported image a deny rule now rejects: the file goes.
        _ => decision.withdraw = row.filter(|r| r.state == ImageState::Imported).cloned(),
    }
    decision.record = Some(record);
    decision
}

/// A stored image the catalog no longer lists: revoked, replaced or dropped.
/// A replaced image in use stays until a listed version of its id is
/// imported, so a site never goes without any version (a manual site
/// waiting for approval, or a download that failed).
fn plan_unlisted(
    row: &ImageRow,
    catalog: &Catalog,
    stored: &HashMap<(&str, &str), &ImageRow>,
) -> Decision {
    let revocation = catalog.revocation_of(row.id.as_str(), row.version.as_str());
    let newer = catalog.first_image_with_id(row.id.as_str());
    let reason = match (revocation, newer) {
        (Some(r), _) => format!("revoked by the endorser: {}", r.reason),
        (None, Some(n)) => {
            let replacement_in_store = catalog
                .images_with_id(row.id.as_str())
                .into_iter()
                .filter_map(|i| stored.get(&(i.id.as_str(), i.version.as_str())))
                .any(|r| r.state == ImageState::Imported);
            if row.state == ImageState::Imported && !replacement_in_store {
                return Decision {
                    item: PlanItem {
                        action: Action::Keep,
                        image: row.label(),
                        size: row.size,
                        reason: format!("replaced by {}; kept until that is imported", n.label()),
                        rewritten_from: None,
                    },
                    withdraw: None,
                    record: None,
                };
            }
            format!("replaced by {}", n.label())
        }
        (None, None) => "no longer in the endorser's catalog".into(),
    };
    Decision {
        item: PlanItem {
            action: Action::Withdraw,
            image: row.label(),
            size: row.size,
            reason,
            rewritten_from: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{catalog, lab, row};

    fn name() -> EndorserName {
        lab()
    }

    fn auto() -> PlanPolicy<'static> {
        PlanPolicy {
            approve: ApproveMode::Auto,
            deny: &[],
            approved_bytes: None,
        }
    }

    fn actions(decisions: &[Decision]) -> Vec<(String, Action)> {
        decisions
            .iter()
            .map(|d| (d.item.image.clone(), d.item.action))
            .collect()
    }

    #[test]
    fn new_images_are_imported_under_auto_approval() {
        let c = catalog(&[("a", "1", b"one"), ("b", "1", b"two")], &[]);
        let d = plan(&[], &name(), &c, &auto());
        assert_eq!(
            actions(&d),
            [
                ("a@1".into(), Action::Import),
                ("b@1".into(), Action::Import)
            ]
        );
        let recorded = d[0].record.as_ref().unwrap();
        assert_eq!(recorded.state, ImageState::Approved);
        assert_eq!(recorded.decided_by, Decider::Policy);
        assert_eq!(recorded.image().unwrap(), c.images()[0]);
        assert!(d.iter().all(|d| d.withdraw.is_none()));
    }

    #[test]
    fn manual_approval_leaves_new_images_pending_and_keeps_operator_decisions() {
        let manual = PlanPolicy {
            approve: ApproveMode::Manual,
            deny: &[],
            approved_bytes: None,
        };
        let c = catalog(
            &[("a", "1", b"one"), ("b", "1", b"two"), ("c", "1", b"3")],
            &[],
        );
        let existing = [
            row(&c, "b", "1", ImageState::Approved, Decider::Manual),
            row(&c, "c", "1", ImageState::Rejected, Decider::Manual),
        ];
        let d = plan(&existing, &name(), &c, &manual);
        assert_eq!(
            actions(&d),
            [
                ("a@1".into(), Action::Pending),
                ("b@1".into(), Action::Import),
                ("c@1".into(), Action::Keep),
            ]
        );
        assert_eq!(d[0].record.as_ref().unwrap().state, ImageState::Pending);
        assert!(d[1].record.is_none(), "an approval by the operator stands");
        assert!(d[2].item.reason.starts_with("rejected by the site"));
        // Pending stays pending without a new record on the next run.
        let pending = [row(&c, "a", "1", ImageState::Pending, Decider::Policy)];
        let again = plan(&pending, &name(), &c, &manual);
        assert_eq!(again[0].item.action, Action::Pending);
        assert!(again[0].record.is_none());
    }

    #[test]
    fn deny_rules_reject_and_are_re_evaluated() {
        let rules = [DenyRule::of(&[("os", DenyValue::Text("LINUX".into()))]).unwrap()];
        let deny = PlanPolicy {
            approve: ApproveMode::Auto,
            deny: &rules,
            approved_bytes: None,
        };
        let c = catalog(&[("a", "1", b"one")], &[]);
        let d = plan(&[], &name(), &c, &deny);
        assert_eq!(d[0].item.action, Action::Reject);
        assert_eq!(d[0].record.as_ref().unwrap().state, ImageState::Rejected);
        assert!(
            d[0].item.reason.contains("os = LINUX"),
            "{}",
            d[0].item.reason
        );
        // The rule is lifted: a policy rejection is decided again.
        let rejected = [d[0].record.clone().unwrap()];
        let d = plan(&rejected, &name(), &c, &auto());
        assert_eq!(d[0].item.action, Action::Import);
        // A pending image that a new rule now denies is rejected.
        let pending = [row(&c, "a", "1", ImageState::Pending, Decider::Policy)];
        assert_eq!(
            plan(&pending, &name(), &c, &deny)[0].item.action,
            Action::Reject
        );
    }

    #[test]
    fn a_new_version_replaces_the_old_one_once_it_is_imported() {
        let old = catalog(&[("a", "1", b"one")], &[]);
        let new = catalog(&[("a", "2", b"two")], &[]);
        let imported = row(&old, "a", "1", ImageState::Imported, Decider::Policy);
        // No gap: while a@2 is not in the store, a@1 stays.
        let d = plan(std::slice::from_ref(&imported), &name(), &new, &auto());
        assert_eq!(
            actions(&d),
            [("a@2".into(), Action::Import), ("a@1".into(), Action::Keep)]
        );
        assert!(d[1].item.reason.contains("kept until that is imported"));
        // Once a@2 is imported, a@1 goes.
        let replacement = row(&new, "a", "2", ImageState::Imported, Decider::Policy);
        let d = plan(&[imported.clone(), replacement], &name(), &new, &auto());
        assert_eq!(
            actions(&d),
            [
                ("a@2".into(), Action::Keep),
                ("a@1".into(), Action::Withdraw)
            ]
        );
        assert_eq!(d[1].item.reason, "replaced by a@2");
        assert_eq!(d[1].withdraw.as_ref().unwrap().version.as_str(), "1");
        // A replaced image that was never imported simply goes.
        let pending = row(&old, "a", "1", ImageState::Pending, Decider::Policy);
        let d = plan(&[pending], &name(), &new, &auto());
        assert_eq!(d[1].item.action, Action::Withdraw);
    }

    #[test]
    fn an_operators_rejection_sticks_even_when_the_bytes_change() {
        let old = catalog(&[("a", "1", b"one")], &[]);
        let rewritten = catalog(&[("a", "1", b"ONE")], &[]);
        let rejected = row(&old, "a", "1", ImageState::Rejected, Decider::Manual);
        let d = plan(&[rejected], &name(), &rewritten, &auto());
        assert_eq!(actions(&d), [("a@1".into(), Action::Keep)]);
        assert!(d[0].record.is_none() && d[0].withdraw.is_none());
    }

    #[test]
    fn deny_rules_reach_imported_images_but_not_an_operators_approval() {
        let rules = [DenyRule::of(&[("os", DenyValue::Text("linux".into()))]).unwrap()];
        let deny = PlanPolicy {
            approve: ApproveMode::Auto,
            deny: &rules,
            approved_bytes: None,
        };
        let c = catalog(&[("a", "1", b"one"), ("b", "1", b"two")], &[]);
        let existing = [
            row(&c, "a", "1", ImageState::Imported, Decider::Policy),
            row(&c, "b", "1", ImageState::Imported, Decider::Manual),
        ];
        let d = plan(&existing, &name(), &c, &deny);
        assert_eq!(
            actions(&d),
            [("a@1".into(), Action::Reject), ("b@1".into(), Action::Keep)]
        );
        assert_eq!(d[0].withdraw.as_ref().unwrap().state, ImageState::Imported);
        assert_eq!(d[0].record.as_ref().unwrap().state, ImageState::Rejected);
    }

    #[test]
    fn revoked_and_dropped_images_are_withdrawn_with_the_reason() {
        let old = catalog(&[("a", "1", b"one"), ("b", "1", b"two")], &[]);
        let new = catalog(&[("c", "1", b"three")], &[("a", None)]);
        let existing = [
            row(&old, "a", "1", ImageState::Imported, Decider::Policy),
            row(&old, "b", "1", ImageState::Pending, Decider::Policy),
        ];
        let d = plan(&existing, &name(), &new, &auto());
        let withdrawn: Vec<_> = d
            .iter()
            .filter(|d| d.item.action == Action::Withdraw)
            .map(|d| (d.item.image.as_str(), d.item.reason.as_str()))
            .collect();
        assert_eq!(
            withdrawn,
            [
                ("a@1", "revoked by the endorser: broken"),
                ("b@1", "no longer in the endorser's catalog")
            ]
        );
        // Already revoked rows are left alone.
        let revoked = [row(&old, "a", "1", ImageState::Revoked, Decider::Sync)];
        assert!(
            plan(&revoked, &name(), &new, &auto())
                .iter()
                .all(|d| d.item.image != "a@1")
        );
    }

    #[test]
    fn expiry_withdraws_images_in_use_unless_policy_keeps_them() {
        let c = catalog(&[("a", "1", b"1"), ("b", "1", b"2"), ("c", "1", b"3")], &[]);
        let existing = [
            row(&c, "a", "1", ImageState::Imported, Decider::Policy),
            row(&c, "b", "1", ImageState::Rejected, Decider::Manual),
            row(&c, "c", "1", ImageState::Pending, Decider::Policy),
        ];
        match plan_expiry(&existing, "2026-02-01T00:00:00Z", OnExpired::Withdraw) {
            ExpiryPlan::Withdraw(rows, reason) => {
                let labels: Vec<_> = rows.iter().map(ImageRow::label).collect();
                assert_eq!(labels, ["a@1", "c@1"]);
                assert!(reason.contains("expired at 2026-02-01T00:00:00Z"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            plan_expiry(&existing, "2026-02-01T00:00:00Z", OnExpired::Keep),
            ExpiryPlan::Keep
        );
    }

    #[test]
    fn rewritten_bytes_keep_the_old_copy_until_the_new_one_is_imported() {
        let before = catalog(&[("a", "1", b"one")], &[]);
        let mut imported = row(&before, "a", "1", ImageState::Imported, Decider::Policy);
        imported.store_path = Some("lab/a@1.img".into());
        let after = catalog(&[("a", "1", b"ONE")], &[]);
        for (policy, state) in [
            (ApproveMode::Auto, ImageState::Approved),
            (ApproveMode::Manual, ImageState::Pending),
        ] {
            let policy = PlanPolicy {
                approve: policy,
                deny: &[],
                approved_bytes: None,
            };
            let d = plan(std::slice::from_ref(&imported), &name(), &after, &policy);
            assert_eq!(d[0].item.rewritten_from, Some(imported.sha256));
            assert!(d[0].withdraw.is_none(), "{d:?}");
            let record = d[0].record.as_ref().unwrap();
            assert_eq!(record.state, state);
            assert_eq!(record.store_path.as_deref(), Some("lab/a@1.img"));
            assert_eq!(record.sha256, after.images()[0].sha256);
        }
        // Unchanged bytes are no rewrite.
        let d = plan(std::slice::from_ref(&imported), &name(), &before, &auto());
        assert_eq!(d[0].item.rewritten_from, None);
        // Rewritten bytes a deny rule rejects: the old copy goes.
        let rules = [DenyRule::of(&[("id", DenyValue::Text("a".into()))]).unwrap()];
        let deny = PlanPolicy {
            approve: ApproveMode::Auto,
            deny: &rules,
            approved_bytes: None,
        };
        let d = plan(std::slice::from_ref(&imported), &name(), &after, &deny);
        assert_eq!(d[0].withdraw.as_ref(), Some(&imported));
        assert_eq!(d[0].record.as_ref().unwrap().store_path, None);
    }
}
