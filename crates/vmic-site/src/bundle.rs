//! Air-gapped bundles. `vmic bundle --out DIR [ENDORSER...]`, run at a
//! connected site, writes for each trusted endorser the catalog it accepted
//! last, exactly as signed, and the images it imported, as a publication
//! (`DIR/<name>/`), plus `DIR/bundle.json` naming each endorser's whole key.
//! `vmic sync --from DIR` at an air-gapped site uses the publication whose
//! key is the one it trusts (matched by key, never by name) as that
//! endorser's only source, with exactly the checks of a network sync:
//! the bundle itself is not trusted, its signatures and digests are.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use vmic_format::catalog::Catalog;
use vmic_format::digest::Sha256Digest;
use vmic_format::minisign::PublicKey;
use vmic_format::publication::{CATALOG_FILE, SIGNATURE_FILE, generation_name};

use crate::error::{Error, Result};
use crate::fsutil::{Placement, atomic_write, place_file};
use crate::model::ImageState;
use crate::site::Site;

/// The bundle's table of contents.
pub const BUNDLE_FILE: &str = "bundle.json";
const BUNDLE_FORMAT: &str = "vmic.bundle/1";

/// `bundle.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleIndex {
    format: String,
    /// When it was written.
    pub created: String,
    /// One entry per endorser.
    pub endorsers: Vec<BundleEntry>,
    /// The VO lists the site accepted, by VO name.
    #[serde(default)]
    pub vos: Vec<BundleVo>,
}

/// One VO list in a bundle.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleVo {
    /// The VO's name (the list names it too, and is checked).
    pub name: String,
    /// The list's directory inside the bundle.
    pub dir: String,
}

/// One endorser in a bundle.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleEntry {
    /// Its name at the site that made the bundle (informative only).
    pub name: String,
    /// Its whole key: what an air-gapped site matches.
    pub pubkey: String,
    /// Keys it had before (rotation statements in `<dir>/keys/` lead from
    /// them): a site still pinned to one finds this publication too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub former_keys: Vec<String>,
    /// The publication's directory inside the bundle.
    pub dir: String,
    /// The catalog's serial.
    pub serial: u64,
    /// Images included.
    pub images: usize,
}

/// What `vmic bundle` wrote.
#[derive(Debug, Serialize)]
pub struct BundleReport {
    /// The bundle directory.
    pub out: String,
    /// What it holds.
    pub endorsers: Vec<BundleEntry>,
    /// Bytes of images written.
    pub image_bytes: u64,
}

/// Write a bundle of `names` (all trusted endorsers when empty) into `out`.
pub fn write_bundle(site: &Site, names: &[String], out: &Path) -> Result<BundleReport> {
    let all = site.state.endorsers()?;
    for wanted in names {
        if !all.iter().any(|e| e.name == *wanted.as_str()) {
            return Err(Error::input(format!(
                "{wanted} is not a trusted endorser (see `vmic trust list`)"
            )));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io("create", out, e))?;
    let mut report = BundleReport {
        out: out.display().to_string(),
        endorsers: Vec::new(),
        image_bytes: 0,
    };
    for endorser in all
        .iter()
        .filter(|e| names.is_empty() || names.iter().any(|n| e.name == *n.as_str()))
    {
        let key = PublicKey::parse(&endorser.pubkey)?;
        let (entry, bytes) = bundle_endorser(site, endorser.name.as_str(), &key, out)?;
        report.image_bytes += bytes;
        report.endorsers.push(entry);
    }
    let index = BundleIndex {
        format: BUNDLE_FORMAT.to_string(),
        created: crate::state::now(),
        endorsers: std::mem::take(&mut report.endorsers),
        vos: bundle_vos(site, out)?,
    };
    let text = serde_json::to_vec_pretty(&index)
        .map_err(|e| Error::io_failure(format!("cannot serialise the bundle index: {e}")))?;
    atomic_write(&out.join(BUNDLE_FILE), &text)?;
    report.endorsers = index.endorsers;
    Ok(report)
}

/// One endorser's publication: the kept catalog and signature, and the
/// imported images under the paths the catalog gives them.
fn bundle_endorser(
    site: &Site,
    name: &str,
    key: &PublicKey,
    out: &Path,
) -> Result<(BundleEntry, u64)> {
    let memory = site.state.serial(key)?.ok_or_else(|| {
        Error::input(format!(
            "endorser {name}: no catalog accepted yet; sync it first"
        ))
    })?;
    let sha = Sha256Digest::from_hex(&memory.catalog_sha256)
        .ok_or_else(|| Error::input(format!("endorser {name}: stored catalog hash is invalid")))?;
    let kept = crate::store::kept_catalog_files(site, name, &sha).ok_or_else(|| {
        Error::input(format!(
            "endorser {name}: the site has not kept catalog {sha} with its signature; run `vmic sync {name}` first"
        ))
    })?;
    let bytes = std::fs::read(&kept.0).map_err(|e| Error::io("read", &kept.0, e))?;
    let signature = std::fs::read(&kept.1).map_err(|e| Error::io("read", &kept.1, e))?;
    let catalog = Catalog::parse(&bytes)?;
    let dir = out.join(name);
    std::fs::create_dir_all(dir.join("catalogs")).map_err(|e| Error::io("create", &dir, e))?;
    atomic_write(&dir.join(generation_name(&sha)), &bytes)?;
    atomic_write(&dir.join(SIGNATURE_FILE), &signature)?;
    atomic_write(&dir.join(CATALOG_FILE), &bytes)?;
    let mut count = 0;
    let mut image_bytes = 0;
    for row in site.state.images_of(name)? {
        let Some(image) = catalog.image(row.id.as_str(), row.version.as_str()) else {
            continue;
        };
        let Some(stored) = row
            .store_path
            .as_ref()
            .filter(|_| row.state == ImageState::Imported)
        else {
            continue;
        };
        let target = image.path.join_to(&dir);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        // A copy (a reflink where possible), never a hard link: writing to
        // the bundle must not change the store.
        place_file(&site.store().join(stored), &target, Placement::Copy)?;
        crate::chunks::copy_into(site, image, &dir)?;
        count += 1;
        image_bytes += image.size();
    }
    copy_rotations(site, name, &dir)?;
    let entry = BundleEntry {
        name: name.to_string(),
        pubkey: key.to_base64(),
        former_keys: site.state.former_keys(name)?,
        dir: name.to_string(),
        serial: memory.highest_serial,
        images: count,
    };
    Ok((entry, image_bytes))
}

/// The rotation statements the site followed for `name`, into the
/// publication's `keys/`.
fn copy_rotations(site: &Site, name: &str, dir: &Path) -> Result<()> {
    copy_kept_files(&crate::store::rotations_dir(site, name), &dir.join("keys")).map(|_| ())
}

/// Copy the files the site kept in `from` into `to`; false when it kept
/// none there.
fn copy_kept_files(from: &Path, to: &Path) -> Result<bool> {
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok(false);
    };
    std::fs::create_dir_all(to).map_err(|e| Error::io("create", to, e))?;
    for entry in entries.flatten() {
        let bytes = std::fs::read(entry.path()).map_err(|e| Error::io("read", &entry.path(), e))?;
        atomic_write(&to.join(entry.file_name()), &bytes)?;
    }
    Ok(true)
}

/// Copy every VO list the site kept into `out/vos/<name>/`.
fn bundle_vos(site: &Site, out: &Path) -> Result<Vec<BundleVo>> {
    let mut vos = Vec::new();
    for vo in site.state.vos()? {
        let kept = crate::store::vo_list_dir(site, vo.name.as_str());
        let dir = format!("vos/{}", vo.name);
        if !copy_kept_files(&kept, &out.join(&dir))? {
            continue;
        }
        vos.push(BundleVo {
            name: vo.name.to_string(),
            dir,
        });
    }
    Ok(vos)
}

fn read_index(dir: &Path) -> Result<BundleIndex> {
    let path = dir.join(BUNDLE_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io("read bundle index", &path, e))?;
    let index: BundleIndex = serde_json::from_slice(&bytes).map_err(|e| {
        Error::input(format!(
            "{} is not a vmic bundle index: {e}",
            path.display()
        ))
    })?;
    if index.format != BUNDLE_FORMAT {
        return Err(Error::input(format!(
            "{} has format {:?}, not {BUNDLE_FORMAT}",
            path.display(),
            index.format
        )));
    }
    Ok(index)
}

/// A directory the bundle index names, inside the bundle.
fn inside(dir: &Path, rel: &str) -> Result<PathBuf> {
    let rel = vmic_format::relpath::SafeRelPath::parse(rel).map_err(|e| {
        Error::input(format!(
            "{}: {}",
            dir.join(BUNDLE_FILE).display(),
            e.message()
        ))
    })?;
    Ok(rel.join_to(dir))
}

/// The list of VO `name` in bundle `dir`, if it has one (authenticated
/// by the caller with its own pinned manager keys).
pub fn vo_source_for(dir: &Path, name: &str) -> Result<Option<PathBuf>> {
    let index = read_index(dir)?;
    match index.vos.iter().find(|v| v.name == name) {
        Some(entry) => inside(dir, &entry.dir).map(Some),
        None => Ok(None),
    }
}

/// The publication in bundle `dir` for the endorser trusted with `key`.
pub fn source_for(dir: &Path, key: &PublicKey) -> Result<Option<PathBuf>> {
    let index = read_index(dir)?;
    let wanted = key.to_base64();
    let found = index
        .endorsers
        .iter()
        .find(|e| e.pubkey == wanted)
        .or_else(|| {
            index
                .endorsers
                .iter()
                .find(|e| e.former_keys.contains(&wanted))
        });
    match found {
        Some(entry) => inside(dir, &entry.dir).map(Some),
        None => Ok(None),
    }
}
