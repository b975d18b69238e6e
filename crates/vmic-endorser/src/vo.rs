//! The VO manager's side: `vmic vo build` compiles `VO.toml` into a signed
//! `vo.json` (the next serial, chained to the previous list) and `vmic vo
//! sign` adds a co-signature of the same bytes, for VOs whose sites need
//! k of n managers. Every signature is a detached minisign signature that
//! stock `minisign -V` checks.

use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::fsutil::{DirLock, atomic_write};
use crate::minisign::{PublicKey, SecretKey, Signature};
use vmic_format::digest::Sha256Digest;
use vmic_format::ids::{EndorserName, Serial};
use vmic_format::vo::{
    RemovedImages, SourceUrl, VO_FILE, VO_SIGNATURE_FILE, VoEndorser, VoList, VoListParts,
    VoRemoved, cosignature_name, vo_comment,
};

const VO_TEMPLATE: &str = include_str!("../../../templates/vo.html");
/// Serialises `vo build`, `vo sign` and `key rotate` in one VO directory.
pub(crate) const LOCK_FILE: &str = ".vmic-vo.lock";

/// `VO.toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VoToml {
    vo: VoSection,
    #[serde(default)]
    endorser: Vec<EndorserToml>,
    #[serde(default)]
    removed: Vec<RemovedToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VoSection {
    name: EndorserName,
    #[serde(default = "default_expires")]
    expires: String,
}

fn default_expires() -> String {
    "30d".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndorserToml {
    name: EndorserName,
    pubkey: PathBuf,
    urls: Vec<String>,
    #[serde(default)]
    compromised: Vec<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemovedToml {
    name: EndorserName,
    pubkey: PathBuf,
    reason: String,
    images: RemovedImages,
}

/// Parse the text of a `VO.toml` (strict: unknown keys are errors naming
/// the line). Key files are not read.
pub fn check_vo_toml(text: &str, origin: &str) -> Result<()> {
    vmic_format::strict_toml::parse::<VoToml>(text, origin).map(|_| ())
}

/// What `vmic vo build` needs.
pub struct VoBuildOptions<'a> {
    /// The VO's description.
    pub toml: PathBuf,
    /// The manager's key.
    pub key: &'a SecretKey,
    /// Where vo.json goes.
    pub out_dir: PathBuf,
    /// Time to stamp; `None` means now.
    pub now: Option<Timestamp>,
}

/// What a VO build or co-signature did.
#[derive(Debug, serde::Serialize)]
pub struct VoReport {
    /// The VO.
    pub vo: String,
    /// The list's serial.
    pub serial: u64,
    /// When it expires.
    pub expires: Timestamp,
    /// Listed endorsers.
    pub endorsers: usize,
    /// Removed endorsers.
    pub removed: usize,
    /// The signature file written.
    pub signature: String,
    /// SHA-256 of vo.json.
    pub sha256: String,
}

/// Compile `VO.toml` into a signed `vo.json` in `out_dir`.
pub fn build_vo(opts: &VoBuildOptions) -> Result<VoReport> {
    let toml_dir = opts.toml.parent().unwrap_or(Path::new("."));
    let text = std::fs::read_to_string(&opts.toml).map_err(|e| Error::io("read", &opts.toml, e))?;
    let spec: VoToml = vmic_format::strict_toml::parse(&text, &opts.toml.display().to_string())?;
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| Error::io("create", &opts.out_dir, e))?;
    let _lock = DirLock::acquire(&opts.out_dir, LOCK_FILE, "vo build")?;
    crate::rotate::refuse_rotated_key(&opts.out_dir, opts.key, "VO manager key")?;
    let previous = previous_list(&opts.out_dir, &spec.vo.name, opts.key)?;
    let now = opts.now.unwrap_or_else(Timestamp::now);
    let issued = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let secs = vmic_format::duration::parse_seconds(&spec.vo.expires)?;
    let expires = i64::try_from(secs)
        .ok()
        .and_then(|s| issued.checked_add(SignedDuration::from_secs(s)).ok())
        .ok_or_else(|| Error::input("expiry out of range"))?;
    let serial = match &previous {
        Some((list, _)) => list.serial.next().map_err(|e| Error::input(e.0))?,
        None => Serial::new(1).map_err(|e| Error::input(e.0))?,
    };
    let list = VoList::new(VoListParts {
        vo: spec.vo.name,
        serial,
        issued,
        expires,
        previous_sha256: previous.map(|(_, sha)| sha),
        endorsers: load_endorsers(&spec.endorser, toml_dir)?,
        removed: load_removed(&spec.removed, toml_dir)?,
    })
    .map_err(|e| e.context(opts.toml.display()))?;
    publish(&opts.out_dir, &list, opts.key)
}

/// The list now in `out_dir`, if any: the new one continues its chain. A
/// list this manager signed before must still verify with this key, so a
/// list edited in the web root is not carried on.
fn previous_list(
    out_dir: &Path,
    vo: &EndorserName,
    key: &SecretKey,
) -> Result<Option<(VoList, Sha256Digest)>> {
    let path = out_dir.join(VO_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read_vo_file(&path)?;
    let own = out_dir.join(cosignature_name(&key.key_id));
    if own.exists() {
        let text = String::from_utf8(read_vo_file(&own)?)
            .map_err(|_| Error::verification(format!("{} is not text", own.display())))?;
        let signature = Signature::parse(&text).map_err(|e| e.context(own.display()))?;
        crate::minisign::verify(&key.public_key(), &bytes, &signature).map_err(|e| {
            Error::verification(format!(
                "{}: {}; refusing to continue a list this key ({}) did not sign as it is",
                path.display(),
                e.message(),
                key.key_id
            ))
        })?;
    }
    let list = VoList::parse(&bytes).map_err(|e| e.context(path.display()))?;
    if list.vo != *vo {
        return Err(Error::input(format!(
            "{} is the list of VO {}, not {vo}; use another output directory",
            path.display(),
            list.vo
        )));
    }
    Ok(Some((list, Sha256Digest::of(&bytes))))
}

/// The list in `out_dir` carries a valid co-signature by `key`: only a
/// manager of this list may rotate its key here.
pub(crate) fn check_own_signature(out_dir: &Path, key: &SecretKey) -> Result<()> {
    let bytes = read_vo_file(&out_dir.join(VO_FILE))?;
    let own = out_dir.join(cosignature_name(&key.key_id));
    let text = String::from_utf8(read_vo_file(&own)?)
        .map_err(|_| Error::verification(format!("{} is not text", own.display())))?;
    let signature = Signature::parse(&text).map_err(|e| e.context(own.display()))?;
    crate::minisign::verify(&key.public_key(), &bytes, &signature).map_err(|e| {
        Error::verification(format!(
            "{}: {}; key {} does not sign this VO list as it is",
            own.display(),
            e.message(),
            key.key_id
        ))
    })
}

fn load_key(dir: &Path, file: &Path, who: &EndorserName) -> Result<PublicKey> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read key", &path, e))?;
    PublicKey::parse(&text).map_err(|e| e.context(format!("key of {who} ({})", path.display())))
}

fn load_endorsers(entries: &[EndorserToml], dir: &Path) -> Result<Vec<VoEndorser>> {
    entries
        .iter()
        .map(|e| {
            let urls = e
                .urls
                .iter()
                .map(|u| {
                    SourceUrl::parse(u)
                        .map_err(|m| Error::input(format!("endorser {}: {m}", e.name)))
                })
                .collect::<Result<Vec<_>>>()?;
            let compromised = e
                .compromised
                .iter()
                .map(|k| load_key(dir, k, &e.name))
                .collect::<Result<Vec<_>>>()?;
            Ok(VoEndorser {
                name: e.name.clone(),
                pubkey: load_key(dir, &e.pubkey, &e.name)?,
                urls,
                compromised,
            })
        })
        .collect()
}

fn load_removed(entries: &[RemovedToml], dir: &Path) -> Result<Vec<VoRemoved>> {
    entries
        .iter()
        .map(|r| {
            Ok(VoRemoved {
                name: r.name.clone(),
                pubkey: load_key(dir, &r.pubkey, &r.name)?,
                reason: r.reason.clone(),
                images: r.images,
            })
        })
        .collect()
}

/// Write the list and its first signature. Co-signatures of the previous
/// bytes no longer apply and are removed first.
fn publish(out_dir: &Path, list: &VoList, key: &SecretKey) -> Result<VoReport> {
    let bytes = list.to_bytes()?;
    let signature = sign_bytes(list, &bytes, key);
    // The generation and its signature first: a reader that follows a new
    // signature finds them; one still reading the previous list keeps
    // finding that list's generation and all its signatures.
    write_generation(out_dir, &bytes, key, &signature)?;
    remove_cosignatures(out_dir, &[])?;
    atomic_write(&out_dir.join(VO_SIGNATURE_FILE), signature.as_bytes())?;
    let own = cosignature_name(&key.key_id);
    atomic_write(&out_dir.join(&own), signature.as_bytes())?;
    atomic_write(&out_dir.join(VO_FILE), &bytes)?;
    atomic_write(&out_dir.join("index.html"), render(list)?.as_bytes())?;
    for (name, bytes) in crate::render::SITE_ASSETS {
        atomic_write(&out_dir.join(name), bytes)?;
    }
    Ok(report(list, &bytes, own))
}

/// `lists/<sha>.json` (immutable) and this manager's signature of it.
fn write_generation(out_dir: &Path, bytes: &[u8], key: &SecretKey, signature: &str) -> Result<()> {
    let sha = Sha256Digest::of(bytes);
    let dir = out_dir.join(vmic_format::vo::VO_GENERATIONS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
    let list = out_dir.join(vmic_format::vo::vo_generation_name(&sha));
    if !list.is_file() {
        atomic_write(&list, bytes)?;
    }
    let own = vmic_format::vo::vo_generation_signature_name(&sha, &key.key_id);
    atomic_write(&out_dir.join(own), signature.as_bytes())
}

fn sign_bytes(list: &VoList, bytes: &[u8], key: &SecretKey) -> String {
    let sha = Sha256Digest::of(bytes);
    let comment = vo_comment(list, &sha, &key.key_id, Timestamp::now().as_second());
    key.sign(bytes, &comment, "signature from vmic VO manager key")
        .to_file_string()
}

/// Remove the entry-point signatures (`vo.json.*.minisig`) in `dir` other
/// than those named in `keep`: they signed an earlier list. Returns the
/// names removed.
pub(crate) fn remove_cosignatures(dir: &Path, keep: &[&str]) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let signature = name.starts_with("vo.json.") && name.ends_with(".minisig");
        if signature && !keep.contains(&name.as_str()) {
            std::fs::remove_file(entry.path())
                .map_err(|e| Error::io("remove", &entry.path(), e))?;
            removed.push(name);
        }
    }
    Ok(removed)
}

fn report(list: &VoList, bytes: &[u8], signature: String) -> VoReport {
    VoReport {
        vo: list.vo.to_string(),
        serial: list.serial.get(),
        expires: list.expires,
        endorsers: list.endorsers.len(),
        removed: list.removed.len(),
        signature,
        sha256: Sha256Digest::of(bytes).to_hex(),
    }
}

/// Add this manager's co-signature to the list in `out_dir`
/// (`vo.json.<KEYID>.minisig`). The list is parsed first: only a valid
/// list is signed, and the report says what is being vouched for.
pub fn cosign_vo(out_dir: &Path, key: &SecretKey) -> Result<VoReport> {
    let _lock = DirLock::acquire(out_dir, LOCK_FILE, "vo sign")?;
    crate::rotate::refuse_rotated_key(out_dir, key, "VO manager key")?;
    let path = out_dir.join(VO_FILE);
    let bytes = read_vo_file(&path)?;
    let list = VoList::parse(&bytes).map_err(|e| e.context(path.display()))?;
    let own = cosignature_name(&key.key_id);
    let signature = sign_bytes(&list, &bytes, key);
    write_generation(out_dir, &bytes, key, &signature)?;
    atomic_write(&out_dir.join(&own), signature.as_bytes())?;
    Ok(report(&list, &bytes, own))
}

pub(crate) fn render(list: &VoList) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.add_template("vo.html", VO_TEMPLATE)
        .map_err(|e| Error::io_failure(format!("built-in template is broken: {e}")))?;
    let template = env
        .get_template("vo.html")
        .map_err(|e| Error::io_failure(format!("built-in template is missing: {e}")))?;
    template
        .render(minijinja::context! {
            list => list,
            generator => concat!("vmic ", env!("CARGO_PKG_VERSION")),
        })
        .map_err(|e| Error::io_failure(format!("cannot render index.html: {e}")))
}

fn read_vo_file(path: &Path) -> Result<Vec<u8>> {
    crate::resign::read_regular(path, vmic_format::vo::MAX_VO_BYTES)
}
