//! `vmic images` with filters (VMIC use case 3.5, the AWS "allocate VM"
//! seed): find images by endorser, VO, state and any catalog field, or the
//! images that fit a machine of so many cores and so much memory, with
//! every catalog field in the result.

use std::collections::BTreeMap;

use serde::Serialize;

use vmic_format::catalog::Image;

use crate::error::Result;
use crate::model::{ImageState, MemberStatus, StoredText};
use crate::site::Site;
use crate::state::{ImageRow, ImageSummary};

/// What to keep; every filter given must match. Text compares ignoring
/// ASCII case.
#[derive(Clone, Debug, Default)]
pub struct ImageQuery {
    /// The site's name for the endorser.
    pub endorser: Option<String>,
    /// A VO that lists the endorser (and whose entry this site follows).
    pub vo: Option<String>,
    /// The image's state here.
    pub state: Option<ImageState>,
    /// Catalog `os`.
    pub os: Option<String>,
    /// Catalog `os_version`.
    pub os_version: Option<String>,
    /// Catalog `arch`.
    pub arch: Option<String>,
    /// Catalog `format`.
    pub format: Option<String>,
    /// One of the catalog `tags`.
    pub tag: Option<String>,
    /// Images that run on this many cores: `min_cores` unset or at most it.
    pub cores: Option<u32>,
    /// Images that run in this much memory (MiB): `min_memory_mb` unset or
    /// at most it.
    pub memory_mb: Option<u64>,
}

/// One image with its state here and every field of its catalog entry.
#[derive(Debug, Serialize)]
pub struct ImageDetail {
    /// State, decision and store path.
    #[serde(flatten)]
    pub summary: ImageSummary,
    /// The VOs that list its endorser here.
    pub vos: Vec<String>,
    /// The catalog entry, as signed.
    pub catalog: Image,
}

impl ImageQuery {
    fn keeps(&self, row: &ImageRow, image: &Image, vos: &[String]) -> bool {
        let same = |want: &Option<String>, have: Option<&str>| {
            want.as_ref()
                .is_none_or(|w| have.is_some_and(|h| h.eq_ignore_ascii_case(w)))
        };
        same(&self.endorser, Some(row.endorser.as_str()))
            && self.vo.as_ref().is_none_or(|w| vos.iter().any(|v| v == w))
            && self.state.is_none_or(|s| s == row.state)
            && same(&self.os, image.os.as_deref())
            && same(&self.os_version, image.os_version.as_deref())
            && same(&self.arch, image.arch.as_deref())
            && same(&self.format, Some(image.format.as_str()))
            && self
                .tag
                .as_ref()
                .is_none_or(|t| image.tags.iter().any(|have| have.eq_ignore_ascii_case(t)))
            && self
                .cores
                .is_none_or(|c| image.min_cores.is_none_or(|need| need <= c))
            && self
                .memory_mb
                .is_none_or(|m| image.min_memory_mb.is_none_or(|need| need <= m))
    }
}

/// The images the site knows that `query` keeps, in the state's order.
pub fn find(site: &Site, query: &ImageQuery) -> Result<Vec<ImageDetail>> {
    let mut vos_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let members = site.state.members(None)?;
    for member in members
        .into_iter()
        .filter(|m| m.status == MemberStatus::Trusted)
    {
        vos_of
            .entry(member.name.as_str().to_string())
            .or_default()
            .push(member.vo);
    }
    let mut found = Vec::new();
    for row in site.state.images()? {
        let image = row.image()?;
        let vos = vos_of
            .get(row.endorser.as_str())
            .cloned()
            .unwrap_or_default();
        if query.keeps(&row, &image, &vos) {
            found.push(ImageDetail {
                summary: ImageSummary::from(&row),
                vos,
                catalog: image,
            });
        }
    }
    Ok(found)
}

/// Every image the site knows, as `vmic check` and `vmic audit` match
/// files against them: imported and approved images are valid; anything
/// else (pending, quarantined, rejected, revoked, expired) is known but
/// refused, with its state and reason. Read from the state once; chunk
/// digests are added only where asked ([`KnownImages::load_digests`]).
pub struct KnownImages {
    /// The images, without chunk digests until loaded.
    pub known: Vec<vmic_engine::attest::Known>,
    /// Their catalog entries, in the same order.
    images: Vec<Image>,
}

impl KnownImages {
    /// Add the chunk digests (from the catalog entry or the kept chunk
    /// index: a read of each) of the images of the `sizes` given; without
    /// them a file is matched by the signed SHA-256.
    pub fn load_digests(&mut self, site: &Site, sizes: &std::collections::BTreeSet<u64>) {
        for (known, image) in self.known.iter_mut().zip(&self.images) {
            if known.expected.is_none() && sizes.contains(&image.size()) {
                known.expected = crate::chunks::digests(site, image, None).ok();
            }
        }
    }
}

/// The images the site knows, without chunk digests.
pub fn known_images(site: &Site) -> Result<KnownImages> {
    use vmic_engine::attest::{Known, Standing};
    let mut known = Vec::new();
    let mut images = Vec::new();
    for row in site.state.images()? {
        let image = row.image()?;
        let standing = match row.state {
            ImageState::Imported | ImageState::Approved => Standing::Valid,
            other => Standing::Refused {
                state: other.as_str().to_string(),
                reason: row.reason.clone(),
            },
        };
        known.push(Known {
            endorser: row.endorser.as_str().to_string(),
            id: row.id.as_str().to_string(),
            version: row.version.as_str().to_string(),
            sha256: image.sha256,
            size: image.size(),
            file_name: file_name(&image),
            standing,
            expected: None,
        });
        images.push(image);
    }
    Ok(KnownImages { known, images })
}

/// The last component of the image's path in its publication.
pub fn file_name(image: &Image) -> String {
    let path = image.path.as_str();
    path.rsplit('/').next().unwrap_or(path).to_string()
}
