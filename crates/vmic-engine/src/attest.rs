//! Golden-image attestation (`vmic check`): is each file byte-identical to
//! an approved, currently valid image? The known images come from a site's
//! state or from an authenticated catalog; this module only matches bytes
//! against them, at verify speed: a size pre-filter first, then every chunk
//! of the file checked on the pool against each distinct signed image of
//! that size (usually one). An image whose chunk digests are not at hand
//! is matched by its signed whole-file SHA-256 instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use vmic_format::chunks::{ChunkDigests, DEFAULT_CHUNK_SIZE};
use vmic_format::digest::Sha256Digest;

use crate::hashing::{CheckItem, Engine, EngineStats, Problem, Progress};

/// Whether a known image may run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Approved and currently valid.
    Valid,
    /// Known but not to be run: revoked, expired, rejected, pending, …
    Refused {
        /// The state (`revoked`, `expired`, …).
        state: String,
        /// Why.
        reason: String,
    },
}

/// One image the files are checked against.
#[derive(Clone, Debug)]
pub struct Known {
    /// The endorser (the site's name, or the catalog's).
    pub endorser: String,
    /// Image id.
    pub id: String,
    /// Image version.
    pub version: String,
    /// Signed whole-file SHA-256.
    pub sha256: Sha256Digest,
    /// Signed size.
    pub size: u64,
    /// The file name the catalog gives it (last path component).
    pub file_name: String,
    /// Whether it may run.
    pub standing: Standing,
    /// Its signed chunk digests, when at hand.
    pub expected: Option<ChunkDigests>,
}

/// The image a file was matched with, as reported.
#[derive(Clone, Debug, Serialize)]
pub struct Named {
    /// Endorser.
    pub endorser: String,
    /// Image id.
    pub id: String,
    /// Image version.
    pub version: String,
    /// Its signed SHA-256.
    pub sha256: Sha256Digest,
    /// Its signed size.
    pub size: u64,
}

impl From<&Known> for Named {
    fn from(k: &Known) -> Named {
        Named {
            endorser: k.endorser.clone(),
            id: k.id.clone(),
            version: k.version.clone(),
            sha256: k.sha256,
            size: k.size,
        }
    }
}

/// What a file turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Finding {
    /// Byte-identical to an approved, currently valid image.
    Approved,
    /// Byte-identical to an image that is revoked, expired, rejected, …
    NotValid,
    /// Same size as a known image, but some chunks differ.
    ChunksDiffer,
    /// Named like a known image, of another size.
    SizeDiffers,
    /// Like no known image.
    Unknown,
    /// Could not be read.
    Unreadable,
}

/// The verdict on one file (`vmic check --json`).
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// The file as given.
    pub file: String,
    /// Approved and valid.
    pub ok: bool,
    /// What it is.
    pub finding: Finding,
    /// The image it is (or is closest to).
    pub image: Option<Named>,
    /// One line a user can act on.
    pub reason: String,
    /// The chunks that differ, for `chunks-differ`.
    pub problems: Vec<Problem>,
}

/// Check every file against `known`.
pub fn attest(
    files: &[PathBuf],
    known: &[Known],
    engine: &Engine,
    progress: &dyn Progress,
) -> (Vec<Verdict>, EngineStats) {
    let sizes: Vec<Result<u64, String>> = files.iter().map(|f| regular_size(f)).collect();
    // One read per file and chunk size: the file is checked against one
    // signed image of its size (a representative), which yields the
    // file's own digest of every chunk; the other images of that size and
    // chunk size are then compared in memory. Files of a common size (raw
    // disks) are so read once, not once per image of that size.
    let mut items = Vec::new();
    let mut asked: Vec<(usize, Vec<usize>)> = Vec::new();
    for (f, size) in sizes.iter().enumerate() {
        let Ok(size) = size else { continue };
        for group in by_chunk_size(known, distinct_candidates(known, *size)) {
            let Some(expected) = known[group[0]].expected.clone() else {
                continue;
            };
            items.push(CheckItem {
                name: files[f].display().to_string(),
                path: files[f].clone(),
                expected,
            });
            asked.push((f, group));
        }
    }
    let (outcomes, stats) = engine.check_files(&items, progress);
    let mut checked: BTreeMap<usize, Vec<(usize, Vec<Problem>)>> = BTreeMap::new();
    let mut matched: BTreeMap<usize, usize> = BTreeMap::new();
    for ((f, group), outcome) in asked.into_iter().zip(outcomes) {
        if let Some(k) = match_in_group(known, &group, &outcome.problems) {
            matched.entry(f).or_insert(k);
        }
        checked
            .entry(f)
            .or_default()
            .push((group[0], outcome.problems));
    }
    let verdicts = files
        .iter()
        .enumerate()
        .map(|(f, file)| {
            let tried = checked.remove(&f).unwrap_or_default();
            judge(
                file,
                &sizes[f],
                known,
                (matched.get(&f).copied(), tried),
                engine,
            )
        })
        .collect();
    (verdicts, stats)
}

/// Candidates with chunk digests, grouped by chunk size (order kept).
fn by_chunk_size(known: &[Known], candidates: Vec<usize>) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for k in candidates {
        let Some(size) = known[k].expected.as_ref().map(ChunkDigests::chunk_size) else {
            continue;
        };
        let same = |g: &Vec<usize>| {
            known[g[0]].expected.as_ref().map(ChunkDigests::chunk_size) == Some(size)
        };
        match groups.iter_mut().find(|g| same(g)) {
            Some(g) => g.push(k),
            None => groups.push(vec![k]),
        }
    }
    groups
}

/// The image of `group` whose chunks the file has, from the check against
/// the first (its mismatches carry the file's own digests).
fn match_in_group(known: &[Known], group: &[usize], problems: &[Problem]) -> Option<usize> {
    let representative = known[group[0]].expected.as_ref()?;
    let mut actual = representative.chunks().to_vec();
    for problem in problems {
        match problem {
            Problem::ChunkMismatch {
                index, actual: a, ..
            } => {
                *actual.get_mut(usize::try_from(*index).ok()?)? = *a;
            }
            _ => return None,
        }
    }
    group.iter().copied().find(|&k| {
        known[k]
            .expected
            .as_ref()
            .is_some_and(|e| e.chunks() == actual.as_slice())
    })
}

/// A regular file's size (following a link the user gave), or why not.
fn regular_size(path: &Path) -> Result<u64, String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(m.len()),
        Ok(_) => Err("not a regular file".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The known images of `size`, one per signed SHA-256 (the valid one when
/// several endorsers publish the same bytes), valid ones first.
fn distinct_candidates(known: &[Known], size: u64) -> Vec<usize> {
    let mut by_sha: BTreeMap<Sha256Digest, usize> = BTreeMap::new();
    for (i, k) in known.iter().enumerate().filter(|(_, k)| k.size == size) {
        let better = |j: usize| rank(&known[i]) < rank(&known[j]);
        match by_sha.get(&k.sha256) {
            Some(&j) if !better(j) => {}
            _ => {
                by_sha.insert(k.sha256, i);
            }
        }
    }
    let mut found: Vec<usize> = by_sha.into_values().collect();
    found.sort_by_key(|&i| rank(&known[i]));
    found
}

/// Valid before refused; with digests before without.
fn rank(k: &Known) -> (bool, bool) {
    (k.standing != Standing::Valid, k.expected.is_none())
}

fn judge(
    file: &Path,
    size: &Result<u64, String>,
    known: &[Known],
    (matched, tried): (Option<usize>, Vec<(usize, Vec<Problem>)>),
    engine: &Engine,
) -> Verdict {
    let name = file.display().to_string();
    let size = match size {
        Ok(size) => *size,
        Err(e) => {
            return verdict(
                &name,
                Finding::Unreadable,
                None,
                format!("cannot read it: {e}"),
            );
        }
    };
    if let Some(k) = matched {
        return identical(&name, &known[k], known);
    }
    let unreadable = tried.iter().find_map(|(_, problems)| {
        problems.iter().find_map(|p| match p {
            Problem::Unreadable { error, .. } => Some(error.clone()),
            _ => None,
        })
    });
    if let Some(error) = unreadable {
        return verdict(
            &name,
            Finding::Unreadable,
            None,
            format!("cannot read it: {error}"),
        );
    }
    if let Some(k) = match_by_whole_digest(file, size, known, engine) {
        return identical(&name, &known[k], known);
    }
    if let Some((k, problems)) = tried.into_iter().next() {
        let differing = problems.len();
        let mut v = verdict(
            &name,
            Finding::ChunksDiffer,
            Some(&known[k]),
            format!(
                "same size as {}/{}@{}, but {differing} chunk(s) differ: not that image",
                known[k].endorser, known[k].id, known[k].version
            ),
        );
        v.problems = problems;
        return v;
    }
    size_or_unknown(&name, file, size, known)
}

/// The file is these bytes: approved when some holder of them is valid.
fn identical(name: &str, matched: &Known, known: &[Known]) -> Verdict {
    let valid = known.iter().find(|k| {
        k.sha256 == matched.sha256 && k.size == matched.size && k.standing == Standing::Valid
    });
    if let Some(k) = valid {
        let mut v = verdict(
            name,
            Finding::Approved,
            Some(k),
            format!(
                "is {}/{}@{}, signed sha256 {}",
                k.endorser, k.id, k.version, k.sha256
            ),
        );
        v.ok = true;
        return v;
    }
    // No valid holder, so `matched` itself is refused.
    let (state, reason) = match &matched.standing {
        Standing::Refused { state, reason } => (state.as_str(), reason.as_str()),
        Standing::Valid => ("valid", ""),
    };
    verdict(
        name,
        Finding::NotValid,
        Some(matched),
        format!(
            "is {}/{}@{}, which is {state}: {reason}",
            matched.endorser, matched.id, matched.version
        ),
    )
}

/// Same-size images without chunk digests at hand: one whole-file SHA-256.
fn match_by_whole_digest(
    file: &Path,
    size: u64,
    known: &[Known],
    engine: &Engine,
) -> Option<usize> {
    let without: Vec<usize> = (0..known.len())
        .filter(|&i| known[i].size == size && known[i].expected.is_none())
        .collect();
    if without.is_empty() {
        return None;
    }
    let (digests, _) = engine.digest_files(
        &[(file.to_path_buf(), size)],
        DEFAULT_CHUNK_SIZE,
        &crate::hashing::NoProgress,
    );
    let sha256 = digests.into_iter().next()?.ok()?.sha256;
    let mut matching: Vec<usize> = without
        .into_iter()
        .filter(|&i| known[i].sha256 == sha256)
        .collect();
    matching.sort_by_key(|&i| rank(&known[i]));
    matching.first().copied()
}

/// No image of this size: one named like the file says its size differs.
fn size_or_unknown(name: &str, file: &Path, size: u64, known: &[Known]) -> Verdict {
    let base = file.file_name().map(|n| n.to_string_lossy().into_owned());
    let named = known
        .iter()
        .filter(|k| base.as_deref() == Some(k.file_name.as_str()))
        .min_by_key(|k| rank(k));
    match named {
        Some(k) => verdict(
            name,
            Finding::SizeDiffers,
            Some(k),
            format!(
                "named like {}/{}@{}, but its size is {size} bytes, the signed size {}: not that image (truncated, grown or another file)",
                k.endorser, k.id, k.version, k.size
            ),
        ),
        None => verdict(
            name,
            Finding::Unknown,
            None,
            format!(
                "no known image has its size ({size} bytes) or its bytes: unknown, not approved"
            ),
        ),
    }
}

fn verdict(name: &str, finding: Finding, image: Option<&Known>, reason: String) -> Verdict {
    Verdict {
        file: name.to_string(),
        ok: false,
        finding,
        image: image.map(Named::from),
        reason,
        problems: Vec::new(),
    }
}
