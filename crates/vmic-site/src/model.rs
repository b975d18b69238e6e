//! The site's vocabulary as types: image states, who decided, hook events.
//! Each is stored in SQLite as the same stable text vmic has always written
//! (a `state.db` from an earlier release reads back unchanged), and parsed
//! back when read: an unknown value is a corrupt database, not a string to
//! pass along.

use std::fmt;

use serde::Serialize;

use crate::error::{Error, Result};

/// Where an image stands at this site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageState {
    /// Listed by a trusted endorser, waiting for `vmic approve`.
    Pending,
    /// Approved; the next sync fetches it.
    Approved,
    /// Verified bytes in the store.
    Imported,
    /// Denied by policy or by the operator.
    Rejected,
    /// Fetched or stored bytes did not match; retried by the next sync.
    Quarantined,
    /// Revoked, replaced or dropped, or the endorser is no longer trusted.
    Revoked,
    /// Withdrawn because the endorser's catalog expired.
    Expired,
}

/// Who made the last decision about an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decider {
    /// Site policy (approval mode, deny rules).
    Policy,
    /// The operator (`vmic approve`, `vmic reject`).
    Manual,
    /// Verification of the bytes.
    Verification,
    /// `vmic sync` following the endorser's catalog.
    Sync,
    /// A site-wide action (`vmic trust remove`).
    Site,
}

/// The events hooks receive (`VMIC_EVENT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HookEvent {
    /// An image entered the store.
    Import,
    /// An image left it: revoked, replaced, dropped, or its endorser removed.
    Revoke,
    /// An image left it because its catalog expired.
    Expire,
    /// Bytes failed verification.
    Quarantine,
    /// An image was rejected.
    Reject,
    /// An endorser's catalog has been missing longer than `gone_after`
    /// (no image variables are set).
    Gone,
    /// The endorser signed other bytes under an id@version the site knew
    /// (the variables describe the new bytes; `VMIC_REASON` both digests).
    Rewrite,
    /// A catalog was refused as a fork of the endorser's history (no image
    /// variables are set; `VMIC_REASON` says why).
    CatalogRefused,
    /// The accepted catalog expires within `policy.expiry_warning` (once
    /// per catalog; no image variables are set).
    Expiring,
    /// A new image waits for `vmic approve` (manual sites).
    Pending,
    /// An endorser was trusted (`trust add`; no image variables are set).
    EndorserAdded,
    /// An endorser is no longer trusted (`trust remove`; no image variables).
    EndorserRemoved,
    /// A VO lists a new endorser that waits for `vmic trust accept`.
    EndorserPending,
    /// An endorser's key was replaced through a rotation statement or its
    /// VO's list (no image variables; `VMIC_REASON` names both keys).
    KeyRotated,
    /// An endorser's key was declared compromised and re-pinned (its
    /// rollback memory reset).
    KeyCompromised,
    /// `vmic audit --quarantine` moved a file that is no approved image
    /// (nor derived from one) out of a hypervisor directory
    /// (`VMIC_IMAGE_PATH`: where it is now; `VMIC_REASON`: where it was).
    Rogue,
    /// `vmic audit --quarantine` moved a copy of a revoked, expired or
    /// rejected image out of a hypervisor directory.
    RevokedInUse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
/// How a trusted endorser's new images are approved.
pub enum ApproveMode {
    /// Imported as soon as they verify.
    Auto,
    /// Left pending until `vmic approve`.
    Manual,
}

impl ApproveMode {
    /// Parse `auto` or `manual`.
    pub fn parse(text: &str) -> Result<ApproveMode> {
        match text {
            "auto" => Ok(ApproveMode::Auto),
            "manual" => Ok(ApproveMode::Manual),
            other => Err(Error::input(format!(
                "approval mode {other:?} must be \"auto\" or \"manual\""
            ))),
        }
    }

    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            ApproveMode::Auto => "auto",
            ApproveMode::Manual => "manual",
        }
    }
}

/// A value stored as text, parsed back when read.
pub trait StoredText: Sized + Copy + 'static {
    /// Every value, for parsing.
    const ALL: &'static [Self];
    /// The stable stored text.
    fn as_str(self) -> &'static str;
    /// The value stored as `text`, if any.
    fn from_stored(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == text)
    }
}

impl StoredText for ImageState {
    const ALL: &'static [Self] = &[
        ImageState::Pending,
        ImageState::Approved,
        ImageState::Imported,
        ImageState::Rejected,
        ImageState::Quarantined,
        ImageState::Revoked,
        ImageState::Expired,
    ];
    fn as_str(self) -> &'static str {
        match self {
            ImageState::Pending => "pending",
            ImageState::Approved => "approved",
            ImageState::Imported => "imported",
            ImageState::Rejected => "rejected",
            ImageState::Quarantined => "quarantined",
            ImageState::Revoked => "revoked",
            ImageState::Expired => "expired",
        }
    }
}

impl StoredText for Decider {
    const ALL: &'static [Self] = &[
        Decider::Policy,
        Decider::Manual,
        Decider::Verification,
        Decider::Sync,
        Decider::Site,
    ];
    fn as_str(self) -> &'static str {
        match self {
            Decider::Policy => "policy",
            Decider::Manual => "manual",
            Decider::Verification => "verification",
            Decider::Sync => "sync",
            Decider::Site => "site",
        }
    }
}

impl StoredText for HookEvent {
    const ALL: &'static [Self] = &[
        HookEvent::Import,
        HookEvent::Revoke,
        HookEvent::Expire,
        HookEvent::Quarantine,
        HookEvent::Reject,
        HookEvent::Gone,
        HookEvent::Rewrite,
        HookEvent::CatalogRefused,
        HookEvent::Expiring,
        HookEvent::Pending,
        HookEvent::EndorserAdded,
        HookEvent::EndorserRemoved,
        HookEvent::EndorserPending,
        HookEvent::KeyRotated,
        HookEvent::KeyCompromised,
        HookEvent::Rogue,
        HookEvent::RevokedInUse,
    ];
    fn as_str(self) -> &'static str {
        match self {
            HookEvent::Import => "import",
            HookEvent::Revoke => "revoke",
            HookEvent::Expire => "expire",
            HookEvent::Quarantine => "quarantine",
            HookEvent::Reject => "reject",
            HookEvent::Gone => "gone",
            HookEvent::Rewrite => "rewrite",
            HookEvent::CatalogRefused => "catalog-refused",
            HookEvent::Expiring => "expiring",
            HookEvent::Pending => "pending",
            HookEvent::EndorserAdded => "endorser-added",
            HookEvent::EndorserRemoved => "endorser-removed",
            HookEvent::EndorserPending => "endorser-pending",
            HookEvent::KeyRotated => "key-rotated",
            HookEvent::KeyCompromised => "key-compromised",
            HookEvent::Rogue => "rogue",
            HookEvent::RevokedInUse => "revoked-in-use",
        }
    }
}

impl fmt::Display for ImageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for HookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T: StoredText + PartialEq + fmt::Debug>() {
        for v in T::ALL {
            assert_eq!(T::from_stored(v.as_str()), Some(*v));
        }
        assert_eq!(T::from_stored("no such value"), None);
    }

    #[test]
    fn stored_text_round_trips() {
        round_trips::<ImageState>();
        round_trips::<Decider>();
        round_trips::<HookEvent>();
    }

    #[test]
    fn stored_text_is_what_earlier_releases_wrote() {
        assert_eq!(ImageState::Quarantined.as_str(), "quarantined");
        assert_eq!(Decider::Verification.as_str(), "verification");
        assert_eq!(HookEvent::Quarantine.as_str(), "quarantine");
    }
}

/// What this site made of one endorser a VO lists (or listed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// Trusted through this VO.
    Trusted,
    /// Listed by a VO whose endorsers are accepted by hand: waits for
    /// `vmic trust accept`.
    Pending,
    /// The operator removed it (`trust remove`): the VO does not bring it
    /// back until `vmic trust accept`.
    Declined,
    /// Removed by the VO with its images kept: no longer synced.
    Kept,
}

impl StoredText for MemberStatus {
    const ALL: &'static [Self] = &[
        MemberStatus::Trusted,
        MemberStatus::Pending,
        MemberStatus::Declined,
        MemberStatus::Kept,
    ];
    fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Trusted => "trusted",
            MemberStatus::Pending => "pending",
            MemberStatus::Declined => "declined",
            MemberStatus::Kept => "kept",
        }
    }
}
