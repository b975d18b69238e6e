//! `vmic audit`: find rogue images on hypervisors (the "detecting
//! user-installed VMs" seed). Every file under the given directories is
//! classified against the images the site knows:
//!
//! - **approved**: byte-identical to an imported (or approved) image;
//! - **revoked**: byte-identical to an image revoked, expired, rejected, …;
//! - **derived**: a qcow2 overlay (an instance disk) whose backing chain,
//!   followed through the real headers inside the scanned directories,
//!   ends in an approved image; **derived-from-rogue** otherwise (a chain
//!   that loops, leaves the scanned directories or ends elsewhere);
//! - **unknown**: anything else, a rogue image;
//! - **link**: a symbolic link, never followed (its target, if inside, is
//!   scanned as itself).
//!
//! Fast enough for a daily cron: files of a size no known image has are
//! not read at all; the others are checked chunk-parallel (`attest`); and
//! a cache keyed on (size, mtime, ctime, inode, device) lets an unchanged
//! directory rescan without reading a byte.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use vmic_engine::attest::{Finding, Known, Named, Standing, attest};
use vmic_engine::hashing::{Engine, FileStamp, Progress};
use vmic_format::digest::Sha256Digest;

use crate::error::{Error, Result};
use crate::site::Site;

/// Longest backing chain followed.
const MAX_CHAIN: usize = 16;
/// The cache, in the site directory.
const CACHE_FILE: &str = "audit-cache.json";

/// What a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// An approved image's bytes.
    Approved,
    /// A revoked, expired or rejected image's bytes.
    Revoked,
    /// An overlay of an approved image.
    Derived,
    /// An overlay whose chain does not end in an approved image.
    DerivedFromRogue,
    /// No approved image: rogue.
    Unknown,
    /// A symbolic link, not followed.
    Link,
}

impl Class {
    /// Whether it may stay (exit 0): approved, derived from approved, or a
    /// link (whose target is judged on its own).
    pub fn acceptable(self) -> bool {
        matches!(self, Class::Approved | Class::Derived | Class::Link)
    }
}

/// One file's classification (`vmic audit --json`).
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// The file.
    pub path: String,
    /// What it is.
    pub class: Class,
    /// The image it is, or (derived) the image at the end of its chain.
    pub image: Option<Named>,
    /// The backing chain, overlay first (derived only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    /// Why, in words.
    pub reason: String,
    /// Where `--quarantine` moved it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined_to: Option<String>,
}

/// What a scan did (`vmic audit --json`).
#[derive(Debug, Default, Serialize)]
pub struct AuditReport {
    /// Every entry, in path order.
    pub entries: Vec<Entry>,
    /// Regular files seen.
    pub files: usize,
    /// Files read this run (the others: no known image of their size, or
    /// unchanged since the cached scan).
    pub hashed: usize,
    /// Bytes read this run.
    pub bytes_hashed: u64,
    /// Files whose verdict came from the cache.
    pub cached: usize,
    /// A cache that could not be written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl AuditReport {
    /// Whether every file may stay.
    pub fn clean(&self) -> bool {
        self.entries.iter().all(|e| e.class.acceptable())
    }
}

/// What the cache remembers of a file: its stamp, the signed image whose
/// bytes it held (if any), and (as one digest of their sorted SHA-256s)
/// the images of its size it was checked
/// against (a new one of that size means checking again).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Remembered {
    stamp: FileStamp,
    matched: Option<Sha256Digest>,
    checked: Sha256Digest,
}

#[derive(Default, Serialize, Deserialize)]
struct Cache {
    files: BTreeMap<String, Remembered>,
}

/// Classify every file under `dirs`, except under `skip` (the quarantine
/// directory, when it is inside one of them).
pub fn scan(
    site: &Site,
    (dirs, skip): (&[PathBuf], Option<&Path>),
    engine: &Engine,
    progress: &dyn Progress,
) -> Result<AuditReport> {
    let roots = canonical_roots(dirs)?;
    let (mut files, mut links) = walk(&roots)?;
    if let Some(skip) = skip {
        files.retain(|(p, _)| !p.starts_with(skip));
        links.retain(|(p, _)| !p.starts_with(skip));
    }
    let cache_path = site.root.join(CACHE_FILE);
    let cache: Cache = std::fs::read(&cache_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    // Chunk digests (a read of each kept index) only for the sizes of the
    // files the cache cannot answer for.
    let mut images = crate::query::known_images(site)?;
    let to_read = sizes_to_read(&files, &images.known, &cache);
    images.load_digests(site, &to_read);
    let known = images.known;
    let mut report = AuditReport {
        files: files.len(),
        ..AuditReport::default()
    };
    let index = sizes_index(&known);
    let matched = match_bytes(
        &files,
        (&known, &index),
        &cache,
        (engine, progress),
        &mut report,
    );
    let mut fresh = Cache::default();
    for (path, stamp, m) in &matched {
        fresh.files.insert(
            path.display().to_string(),
            Remembered {
                stamp: *stamp,
                matched: m.map(|k| known[k].sha256),
                checked: index
                    .get(&stamp.size)
                    .copied()
                    .unwrap_or_else(|| Sha256Digest::of(b"")),
            },
        );
    }
    let by_path: BTreeMap<&Path, Option<usize>> =
        matched.iter().map(|(p, _, m)| (p.as_path(), *m)).collect();
    for (path, _, m) in &matched {
        report
            .entries
            .push(classify(path, *m, &known, &by_path, &roots));
    }
    for (link, target) in links {
        report.entries.push(Entry {
            path: link.display().to_string(),
            class: Class::Link,
            image: None,
            chain: Vec::new(),
            reason: format!("symbolic link to {target}, not followed"),
            quarantined_to: None,
        });
    }
    report.entries.sort_by(|a, b| a.path.cmp(&b.path));
    if let Err(e) = save_cache(&cache_path, &fresh) {
        report.warning = Some(format!("could not save the audit cache: {}", e.message()));
    }
    Ok(report)
}

fn canonical_roots(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    dirs.iter()
        .map(|d| {
            let meta = std::fs::metadata(d).map_err(|e| Error::io("open", d, e))?;
            if !meta.is_dir() {
                return Err(Error::input(format!("{} is not a directory", d.display())));
            }
            d.canonicalize().map_err(|e| Error::io("resolve", d, e))
        })
        .collect()
}

/// Regular files (with their stamps) and symbolic links under `roots`,
/// never following a link, each file once.
#[allow(clippy::type_complexity)]
fn walk(roots: &[PathBuf]) -> Result<(Vec<(PathBuf, FileStamp)>, Vec<(PathBuf, String)>)> {
    let mut files = BTreeMap::new();
    let mut links = Vec::new();
    for root in roots {
        for entry in walkdir::WalkDir::new(root).follow_links(false) {
            let entry = entry
                .map_err(|e| Error::io_failure(format!("cannot list {}: {e}", root.display())))?;
            let kind = entry.file_type();
            if kind.is_symlink() {
                let target = std::fs::read_link(entry.path())
                    .map(|t| t.display().to_string())
                    .unwrap_or_default();
                links.push((entry.path().to_path_buf(), target));
            } else if kind.is_file() {
                let meta = entry.metadata().map_err(|e| {
                    Error::io_failure(format!("cannot stat {}: {e}", entry.path().display()))
                })?;
                files.insert(entry.path().to_path_buf(), FileStamp::of(&meta));
            }
        }
    }
    Ok((files.into_iter().collect(), links))
}

/// The sizes of the files that must be read: a known image has their size
/// and the cache cannot vouch for them.
fn sizes_to_read(files: &[(PathBuf, FileStamp)], known: &[Known], cache: &Cache) -> BTreeSet<u64> {
    let by_size = sizes_index(known);
    files
        .iter()
        .filter(|(path, stamp)| {
            let Some(candidates) = by_size.get(&stamp.size) else {
                return false;
            };
            !cache
                .files
                .get(&path.display().to_string())
                .is_some_and(|r| r.stamp == *stamp && r.checked == *candidates)
        })
        .map(|(_, stamp)| stamp.size)
        .collect()
}

/// Size → one digest of the sorted signed SHA-256s of the known images of
/// that size: a cached verdict stands only while that set is unchanged.
fn sizes_index(known: &[Known]) -> BTreeMap<u64, Sha256Digest> {
    let mut index: BTreeMap<u64, BTreeSet<Sha256Digest>> = BTreeMap::new();
    for k in known {
        index.entry(k.size).or_default().insert(k.sha256);
    }
    index
        .into_iter()
        .map(|(size, set)| {
            let bytes: Vec<u8> = set.iter().flat_map(|d| d.to_hex().into_bytes()).collect();
            (size, Sha256Digest::of(&bytes))
        })
        .collect()
}

/// Each file with the known image whose bytes it holds: from the cache when
/// its stamp and the images of its size are unchanged, else by reading it.
fn match_bytes(
    files: &[(PathBuf, FileStamp)],
    (known, index): (&[Known], &BTreeMap<u64, Sha256Digest>),
    cache: &Cache,
    (engine, progress): (&Engine, &dyn Progress),
    report: &mut AuditReport,
) -> Vec<(PathBuf, FileStamp, Option<usize>)> {
    let mut out = Vec::with_capacity(files.len());
    let mut to_check = Vec::new();
    for (path, stamp) in files {
        let Some(candidates) = index.get(&stamp.size) else {
            out.push((path.clone(), *stamp, None));
            continue;
        };
        let remembered = cache
            .files
            .get(&path.display().to_string())
            .filter(|r| r.stamp == *stamp && r.checked == *candidates);
        match remembered {
            Some(r) => {
                report.cached += 1;
                let m = r
                    .matched
                    .and_then(|sha| best_holder(known, sha, stamp.size));
                out.push((path.clone(), *stamp, m));
            }
            None => to_check.push((path.clone(), *stamp)),
        }
    }
    let paths: Vec<PathBuf> = to_check.iter().map(|(p, _)| p.clone()).collect();
    let (verdicts, stats) = attest(&paths, known, engine, progress);
    report.hashed += paths.len();
    report.bytes_hashed += stats.bytes_hashed;
    for ((path, stamp), verdict) in to_check.into_iter().zip(verdicts) {
        let m = match verdict.finding {
            Finding::Approved | Finding::NotValid => verdict
                .image
                .and_then(|n| best_holder(known, n.sha256, n.size)),
            _ => None,
        };
        out.push((path, stamp, m));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The known image holding these bytes, a valid one first.
fn best_holder(known: &[Known], sha256: Sha256Digest, size: u64) -> Option<usize> {
    let holders = (0..known.len()).filter(|&i| known[i].sha256 == sha256 && known[i].size == size);
    holders.min_by_key(|&i| known[i].standing != Standing::Valid)
}

fn classify(
    path: &Path,
    matched: Option<usize>,
    known: &[Known],
    by_path: &BTreeMap<&Path, Option<usize>>,
    roots: &[PathBuf],
) -> Entry {
    let entry = |class, image: Option<&Known>, reason: String| Entry {
        path: path.display().to_string(),
        class,
        image: image.map(Named::from),
        chain: Vec::new(),
        reason,
        quarantined_to: None,
    };
    if let Some(k) = matched.map(|k| &known[k]) {
        let label = format!("{}/{}@{}", k.endorser, k.id, k.version);
        return match &k.standing {
            Standing::Valid => entry(Class::Approved, Some(k), format!("is {label}")),
            Standing::Refused { state, reason } => entry(
                Class::Revoked,
                Some(k),
                format!("is {label}, which is {state}: {reason}"),
            ),
        };
    }
    match backing_chain(path, roots) {
        Chain::None => entry(
            Class::Unknown,
            None,
            "no approved image has these bytes: a rogue image".into(),
        ),
        Chain::Broken(chain, why) => Entry {
            chain: chain.iter().map(|p| p.display().to_string()).collect(),
            ..entry(
                Class::DerivedFromRogue,
                None,
                format!("a qcow2 overlay whose {why}"),
            )
        },
        Chain::Ends(chain) => derived(path, chain, known, by_path, &entry),
    }
}

/// The overlay chain ended on a file: derived if that file is approved.
fn derived(
    _path: &Path,
    chain: Vec<PathBuf>,
    known: &[Known],
    by_path: &BTreeMap<&Path, Option<usize>>,
    entry: &dyn Fn(Class, Option<&Known>, String) -> Entry,
) -> Entry {
    let base = chain.last().cloned().unwrap_or_default();
    let holder = by_path
        .get(base.as_path())
        .copied()
        .flatten()
        .map(|k| &known[k]);
    let names: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
    let e = match holder {
        Some(k) if k.standing == Standing::Valid => entry(
            Class::Derived,
            Some(k),
            format!(
                "a qcow2 overlay of {} ({}/{}@{}, approved)",
                base.display(),
                k.endorser,
                k.id,
                k.version
            ),
        ),
        Some(k) => entry(
            Class::DerivedFromRogue,
            Some(k),
            format!(
                "a qcow2 overlay of {}, which is {}/{}@{}, not approved",
                base.display(),
                k.endorser,
                k.id,
                k.version
            ),
        ),
        None => entry(
            Class::DerivedFromRogue,
            None,
            format!(
                "a qcow2 overlay of {}, which is no approved image",
                base.display()
            ),
        ),
    };
    Entry { chain: names, ..e }
}

enum Chain {
    /// Not an overlay.
    None,
    /// An overlay; the chain, overlay first, ends at a file without backing.
    Ends(Vec<PathBuf>),
    /// An overlay whose chain cannot be followed, and why.
    Broken(Vec<PathBuf>, String),
}

/// Follow qcow2 backing files from `path`, inside `roots` only.
fn backing_chain(path: &Path, roots: &[PathBuf]) -> Chain {
    let mut chain = vec![path.to_path_buf()];
    loop {
        let current = chain.last().cloned().unwrap_or_default();
        let Some(name) = vmic_engine::detect::qcow2_backing_file(&current) else {
            return if chain.len() == 1 {
                Chain::None
            } else {
                Chain::Ends(chain)
            };
        };
        let text = String::from_utf8_lossy(&name).into_owned();
        let target = current.parent().unwrap_or(Path::new("/")).join(&text);
        let Ok(resolved) = target.canonicalize() else {
            return Chain::Broken(chain, format!("backing file {text:?} does not exist"));
        };
        if !roots.iter().any(|r| resolved.starts_with(r)) {
            return Chain::Broken(
                chain,
                format!("backing file {text:?} is outside the scanned directories"),
            );
        }
        if chain.contains(&resolved) {
            return Chain::Broken(
                chain,
                format!("backing chain loops at {}", resolved.display()),
            );
        }
        if chain.len() > MAX_CHAIN {
            return Chain::Broken(chain, format!("backing chain is longer than {MAX_CHAIN}"));
        }
        chain.push(resolved);
    }
}

fn save_cache(path: &Path, cache: &Cache) -> Result<()> {
    let bytes = serde_json::to_vec(cache)
        .map_err(|e| Error::io_failure(format!("cannot serialise the audit cache: {e}")))?;
    crate::fsutil::atomic_write(path, &bytes)
}

/// Move every file that may not stay (unknown, revoked, derived from
/// rogue) into `dir`: by rename on the same filesystem, never overwriting,
/// so a file is either where it was or whole in `dir`. Each move is logged
/// and fires a hook (`rogue`, or `revoked-in-use`); a file on another
/// filesystem is left where it is, reported.
pub fn quarantine(site: &mut Site, report: &mut AuditReport, dir: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let mut failures = Vec::new();
    for entry in report.entries.iter_mut().filter(|e| !e.class.acceptable()) {
        let from = PathBuf::from(&entry.path);
        match move_into(&from, dir) {
            Ok(to) => {
                record_move(site, entry, &to)?;
                entry.quarantined_to = Some(to.display().to_string());
            }
            Err(e) => failures.push(format!("{}: {}", entry.path, e.message())),
        }
    }
    crate::hooks::flush_outbox(site)?;
    Ok(failures)
}

/// `dir/<name>.<seconds>[.<n>]`, by hard link then unlink: no overwrite,
/// and no copy across filesystems.
fn move_into(from: &Path, dir: &Path) -> Result<PathBuf> {
    let name = from
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let stamp = jiff::Timestamp::now().as_second();
    for n in 0..1000 {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!(".{n}")
        };
        let to = dir.join(format!("{name}.{stamp}{suffix}"));
        match std::fs::hard_link(from, &to) {
            Ok(()) => {
                std::fs::remove_file(from).map_err(|e| Error::io("remove", from, e))?;
                return Ok(to);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                return Err(Error::input(format!(
                    "{} is on another filesystem than {}; not moved (a copy could be half-written)",
                    from.display(),
                    dir.display()
                )));
            }
            Err(e) => return Err(Error::io("move into quarantine", from, e)),
        }
    }
    Err(Error::io_failure(format!(
        "no free name in {}",
        dir.display()
    )))
}

fn record_move(site: &mut Site, entry: &Entry, to: &Path) -> Result<()> {
    use crate::model::HookEvent;
    let (event, action) = match entry.class {
        Class::Revoked => (HookEvent::RevokedInUse, "revoked-in-use"),
        _ => (HookEvent::Rogue, "rogue"),
    };
    let detail = format!("{} moved to {}: {}", entry.path, to.display(), entry.reason);
    let image = entry.image.as_ref();
    let label = image.map(|i| format!("{}@{}", i.id, i.version));
    let mut env = vec![
        ("VMIC_EVENT".to_string(), action.to_string()),
        ("VMIC_IMAGE_PATH".into(), to.display().to_string()),
        (
            "VMIC_REASON".into(),
            format!("{} ({})", entry.path, entry.reason),
        ),
    ];
    if let Some(i) = image {
        env.push(("VMIC_ENDORSER".into(), i.endorser.clone()));
        env.push(("VMIC_IMAGE_ID".into(), i.id.clone()));
        env.push(("VMIC_IMAGE_VERSION".into(), i.version.clone()));
        env.push(("VMIC_IMAGE_SHA256".into(), i.sha256.to_hex()));
    }
    let tx = site.state.transaction()?;
    tx.audit(
        action,
        image.map(|i| i.endorser.as_str()),
        label.as_deref(),
        &detail,
    )?;
    tx.enqueue_hook(event, &env)?;
    tx.commit()
}
