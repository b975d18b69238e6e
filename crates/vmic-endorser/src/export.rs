//! Exports of a publication for tools that already exist: a simplestreams
//! tree (`streams/v1/index.json` and a `products:1.0` file, which
//! `sstream-mirror` and glance-simplestreams-sync read) and a HEPiX image
//! list (the `hv:imagelist` JSON of vmcaster, read by vmcatcher and
//! cloudkeeper; optionally S/MIME-signed). Both are made from the signed
//! catalog, authenticated first with the endorser's public key: an export
//! never says more than the signature covers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};

use vmic_engine::hashing::Engine;
use vmic_engine::publication::Publication;
use vmic_format::authenticate::Authenticated;
use vmic_format::catalog::{Catalog, Image};
use vmic_format::digest::Sha256Digest;

use crate::error::{Error, Result};
use crate::fsutil::atomic_write;

/// Where simplestreams data lives in a publication.
pub const STREAMS_DIR: &str = "streams/v1";

/// What an export wrote.
#[derive(Debug, Serialize)]
pub struct ExportReport {
    /// Files written.
    pub written: Vec<String>,
    /// Images exported.
    pub images: usize,
}

/// `updated` as simplestreams writes it (RFC 2822, UTC).
fn rfc2822(t: Timestamp) -> String {
    t.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

/// The simplestreams `ftype` of an image: its format, `disk1.img` for raw
/// disks (the name simplestreams consumers look for).
fn ftype(image: &Image) -> String {
    match image.format.as_str() {
        "raw" => "disk1.img".to_string(),
        other => other.to_string(),
    }
}

/// Write `streams/v1/index.json` and `streams/v1/<content_id>.json` into
/// the publication directory `dir`; item paths are the catalog's, relative
/// to `dir`, so the publication's web server serves them as they are.
pub fn simplestreams(
    dir: &Path,
    authenticated: &Authenticated,
    content_id: &str,
) -> Result<ExportReport> {
    let catalog = &authenticated.catalog;
    let updated = rfc2822(catalog.issued());
    let products = products(catalog, content_id);
    let names: Vec<String> = products.keys().cloned().collect();
    let product_file = format!("{STREAMS_DIR}/{content_id}.json");
    let products_doc = json!({
        "content_id": content_id,
        "datatype": "image-downloads",
        "format": "products:1.0",
        "updated": updated,
        "products": products,
    });
    let index_doc = json!({
        "format": "index:1.0",
        "updated": updated,
        "index": {
            content_id: {
                "datatype": "image-downloads",
                "path": product_file,
                "updated": updated,
                "format": "products:1.0",
                "products": names,
            }
        }
    });
    std::fs::create_dir_all(dir.join(STREAMS_DIR))
        .map_err(|e| Error::io("create", &dir.join(STREAMS_DIR), e))?;
    // The products first, then the index naming them.
    write_json(&dir.join(&product_file), &products_doc)?;
    let index = format!("{STREAMS_DIR}/index.json");
    write_json(&dir.join(&index), &index_doc)?;
    Ok(ExportReport {
        written: vec![product_file, index],
        images: catalog.images().len(),
    })
}

/// One product per image id (`<content_id>:<id>`), one version per image
/// version, one item holding the image.
fn products(catalog: &Catalog, content_id: &str) -> BTreeMap<String, Value> {
    let mut products: BTreeMap<String, Value> = BTreeMap::new();
    for image in catalog.images() {
        let name = format!("{content_id}:{}", image.id);
        let product = products.entry(name).or_insert_with(|| {
            let mut p = json!({"versions": {}});
            for (key, value) in [
                ("arch", &image.arch),
                ("os", &image.os),
                ("release", &image.os_version),
                ("release_title", &image.title),
            ] {
                if let Some(v) = value {
                    p[key] = json!(v);
                }
            }
            p
        });
        let item = json!({
            "ftype": ftype(image),
            "path": image.path.as_str(),
            "size": image.size(),
            "sha256": image.sha256.to_hex(),
        });
        product["versions"][image.version.as_str()] = json!({
            "pubname": format!("{}-{}", image.id, image.version),
            "items": { ftype(image): item },
        });
    }
    products
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::io_failure(format!("cannot serialise {}: {e}", path.display())))?;
    bytes.push(b'\n');
    atomic_write(path, &bytes)
}

/// The endorser's X.509 identity for a HEPiX list (vmcatcher matches
/// endorsers by DN and CA).
#[derive(Clone, Debug, Default)]
pub struct X509Identity {
    /// Subject DN, `/DC=org/DC=example/CN=Jane Doe`.
    pub dn: Option<String>,
    /// Issuer CA DN.
    pub ca: Option<String>,
}

/// A HEPiX image list for the authenticated catalog. SHA-512 digests are
/// computed here (one pass per image, in parallel across images), from the
/// publication's files, each first checked against the signed chunk
/// digests so the list never vouches for other bytes than the catalog.
pub fn hepix(
    publication: &Publication,
    authenticated: &Authenticated,
    (base_url, identity): (Option<&str>, &X509Identity),
    engine: &Engine,
) -> Result<Value> {
    let catalog = &authenticated.catalog;
    let files = local_files(publication, catalog, engine)?;
    let digests = engine.sha512_files(&files);
    let mut images = Vec::new();
    for (image, digest) in catalog.images().iter().zip(digests) {
        let sha512: String = digest?.iter().map(|b| format!("{b:02x}")).collect();
        images.push(json!({"hv:image": hepix_image(catalog, image, base_url, &sha512)?}));
    }
    let endorser = catalog.endorser();
    Ok(json!({
        "hv:imagelist": {
            "dc:date:created": catalog.issued().to_string(),
            "dc:date:expires": catalog.expires().to_string(),
            "dc:description": format!("vmic catalog of {}, serial {}", endorser.name, catalog.serial()),
            "dc:identifier": uuid(&format!("{}:list", endorser.key_id)),
            "dc:source": base_url.unwrap_or_default(),
            "dc:title": endorser.name,
            "hv:endorser": {
                "hv:x509": {
                    "dc:creator": endorser.name,
                    "hv:ca": identity.ca.clone().unwrap_or_default(),
                    "hv:dn": identity.dn.clone().unwrap_or_default(),
                    "hv:email": endorser.contact.clone().unwrap_or_default(),
                }
            },
            "hv:images": images,
            "hv:uri": base_url.map(|b| format!("{}/image.list", b.trim_end_matches('/'))).unwrap_or_default(),
            "hv:version": catalog.serial().to_string(),
        }
    }))
}

fn hepix_image(
    catalog: &Catalog,
    image: &Image,
    base_url: Option<&str>,
    sha512: &str,
) -> Result<Value> {
    let uri = match (image.urls.first(), base_url) {
        (Some(url), _) => url.to_string(),
        (None, Some(base)) => format!("{}/{}", base.trim_end_matches('/'), image.path),
        (None, None) => {
            return Err(Error::input(format!(
                "image {} has no URL: give --base-url (vmcatcher downloads from hv:uri)",
                image.label()
            )));
        }
    };
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut fields = json!({
        "dc:description": text(&image.description),
        "dc:identifier": uuid(&format!("{}:{}", catalog.endorser().key_id, image.id)),
        "dc:title": image.title.clone().unwrap_or_else(|| image.id.to_string()),
        "hv:format": image.format.as_str(),
        "hv:hypervisor": text(&image.hypervisor),
        "hv:size": image.size(),
        "hv:uri": uri,
        "hv:version": image.version.as_str(),
        "sl:arch": text(&image.arch),
        "sl:checksum:sha512": sha512,
        "sl:comments": image.tags.join(" "),
        "sl:os": text(&image.os_family),
        "sl:osname": text(&image.os),
        "sl:osversion": text(&image.os_version),
    });
    if let Some(cores) = image.min_cores {
        fields["ad:mincores"] = json!(cores);
    }
    if let Some(memory) = image.min_memory_mb {
        fields["ad:minram"] = json!(memory);
    }
    Ok(fields)
}

/// The publication's image files, each checked against its signed chunk
/// digests first (a tampered file fails the export, naming it).
fn local_files(
    publication: &Publication,
    catalog: &Catalog,
    engine: &Engine,
) -> Result<Vec<PathBuf>> {
    let mut items = Vec::new();
    for image in catalog.images() {
        let path = publication.local_image(image)?.ok_or_else(|| {
            Error::input("a HEPiX export reads the images: give a local publication directory")
        })?;
        items.push(vmic_engine::hashing::CheckItem {
            name: image.label(),
            path,
            expected: publication.chunk_digests(image)?,
        });
    }
    let (outcomes, _) = engine.check_files(&items, &vmic_engine::hashing::NoProgress);
    for (item, outcome) in items.iter().zip(&outcomes) {
        if let Some(problem) = outcome.problems.first() {
            return Err(Error::verification(format!(
                "image {} ({}): {}; not exported",
                item.name,
                item.path.display(),
                problem.describe()
            )));
        }
    }
    Ok(items.into_iter().map(|i| i.path).collect())
}

/// A stable name-based UUID (version 5 layout, from SHA-256): the same
/// endorser key and image id always give the same `dc:identifier`, which
/// vmcatcher tracks across versions.
fn uuid(name: &str) -> String {
    let mut b = Sha256Digest::of(name.as_bytes()).to_hex().into_bytes();
    b[12] = b'5';
    b[16] = b"89ab"[(b[16] % 4) as usize];
    let h = String::from_utf8(b).unwrap_or_default();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Sign `json` as S/MIME with `openssl smime -sign -nodetach` (the form
/// vmcatcher and cloudkeeper verify; `openssl smime -verify` prints the
/// list back).
pub fn smime_sign(json: &[u8], cert: &Path, key: &Path, out: &Path) -> Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(["smime", "-sign", "-nodetach", "-binary", "-signer"])
        .arg(cert)
        .arg("-inkey")
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::io_failure(format!("cannot run openssl (needed for --smime-cert): {e}"))
        })?;
    // The list is small: written whole before the output is read.
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(json)
            .map_err(|e| Error::io_failure(format!("cannot feed openssl: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| Error::io_failure(format!("openssl smime -sign: {e}")))?;
    if !output.status.success() {
        return Err(Error::input(format!(
            "openssl smime -sign failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    atomic_write(out, &output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_stable_and_well_formed() {
        let a = uuid("KEY:centos");
        assert_eq!(a, uuid("KEY:centos"));
        assert_ne!(a, uuid("KEY:debian"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "5");
        assert!("89ab".contains(&a[19..20]));
    }
}
