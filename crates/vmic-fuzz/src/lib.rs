//! The fuzz harnesses: one function per parser that reads untrusted or
//! hand-written bytes. `fuzz/` (cargo fuzz) calls them with generated
//! inputs; `tests/fuzz_corpus.rs` replays the kept corpus through the same
//! functions in every `cargo test`, so a crash once found stays fixed.
//!
//! Each harness feeds the bytes to the parser and then checks what must
//! hold of whatever it accepted (a round trip, a verified result): a panic
//! here, and only a panic, is a finding.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::io::Write;
use std::sync::OnceLock;

use vmic_engine::fetch::Landing;
use vmic_engine::hashing::{Engine, NoProgress};
use vmic_engine::partfile::{Expected, PartFile};
use vmic_format::catalog::Catalog;
use vmic_format::digest::Sha256Digest;
use vmic_format::minisign::{self, PublicKey, SecretKey, Signature};
use vmic_format::trusted_comment;

/// The names of the targets, as `fuzz/fuzz_targets/<name>.rs` and
/// `fuzz/corpus/<name>/` spell them.
pub const TARGETS: [&str; 14] = [
    "catalog",
    "signature",
    "public_key",
    "secret_key",
    "trusted_comment",
    "site_toml",
    "sidecar",
    "catalog_toml",
    "part_resume",
    "vo_list",
    "rotation",
    "vo_toml",
    "chunk_index",
    "image_headers",
];

/// Run the harness called `name` on `data`; false if there is none.
pub fn run(name: &str, data: &[u8]) -> bool {
    let harness: fn(&[u8]) = match name {
        "catalog" => catalog,
        "signature" => signature,
        "public_key" => public_key,
        "secret_key" => secret_key,
        "trusted_comment" => trusted_comment,
        "site_toml" => site_toml,
        "sidecar" => sidecar,
        "catalog_toml" => catalog_toml,
        "part_resume" => part_resume,
        "vo_list" => vo_list,
        "rotation" => rotation,
        "vo_toml" => vo_toml,
        "chunk_index" => chunk_index,
        "image_headers" => image_headers,
        _ => return false,
    };
    harness(data);
    true
}

/// `catalog.json`: whatever parses re-serialises into a catalog that
/// parses to the same thing.
pub fn catalog(data: &[u8]) {
    let Ok(catalog) = Catalog::parse(data) else {
        return;
    };
    let again = catalog.to_bytes().expect("a parsed catalog serialises");
    let reparsed = Catalog::parse(&again).expect("a parsed catalog re-parses");
    assert_eq!(reparsed.to_bytes().unwrap(), again);
}

/// A chunk index (catalog format 2), authenticated by an entry naming its
/// exact digest and the size and chunk size it claims: whatever opens holds
/// exactly one digest per chunk of the entry's size, and the writer's own
/// index of those digests opens to the same digests.
pub fn chunk_index(data: &[u8]) {
    use vmic_format::chunk_index::{ChunkIndexRef, ChunkScheme, IndexedChunks};
    let claimed = serde_json::from_slice::<serde_json::Value>(data).ok();
    let field = |name: &str| claimed.as_ref().and_then(|v| v[name].as_u64());
    let reference = ChunkIndexRef {
        sha256: Sha256Digest::of(data),
        size: data.len() as u64,
    };
    let Ok(entry) = IndexedChunks::new(
        field("size").unwrap_or(0),
        ChunkScheme::Fixed,
        Some(field("chunk_size").unwrap_or(8 << 20)),
        reference,
    ) else {
        return;
    };
    let Ok(digests) = entry.open(data) else {
        return;
    };
    let chunk = digests.chunk_size();
    assert_eq!(
        digests.chunks().len() as u64,
        digests.size().div_ceil(chunk)
    );
    let (rewritten, bytes) = IndexedChunks::for_digests(&digests);
    assert_eq!(rewritten.open(&bytes).expect("own index opens"), digests);
}

/// Disk image headers (qcow2, VMDK) as a hostile image would have them:
/// reading the references an image holds outside itself never panics,
/// never reads past what it asks for, and names only bounded, printable
/// targets.
pub fn image_headers(data: &[u8]) {
    use vmic_format::external_refs::{external_references, qcow2_backing_name};
    use vmic_format::image_format::ImageFormat;
    let mut read = |offset: u64, len: usize| -> Option<Vec<u8>> {
        assert!(len <= 4 << 20, "asked for {len} bytes");
        let start = usize::try_from(offset).ok()?.min(data.len());
        let end = start.saturating_add(len).min(data.len());
        Some(data[start..end].to_vec())
    };
    for format in [ImageFormat::Qcow2, ImageFormat::Vmdk] {
        for reference in external_references(format, &mut read) {
            assert!(
                !reference.target.chars().any(char::is_control),
                "{reference:?}"
            );
        }
    }
    let _ = qcow2_backing_name(&mut read);
}

/// A `.minisig` file, checked against the demo key over a fixed message:
/// a parsed signature round-trips, and verifying it never panics.
pub fn signature(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(signature) = Signature::parse(text) else {
        return;
    };
    let again = Signature::parse(&signature.to_file_string()).expect("round trip");
    assert_eq!(again, signature);
    let _ = minisign::verify(demo_public_key(), b"catalog", &signature);
}

/// A public key file: what parses round-trips.
pub fn public_key(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(key) = PublicKey::parse(text) else {
        return;
    };
    assert_eq!(PublicKey::parse(&key.to_file_string()).unwrap(), key);
}

/// A secret key file, unencrypted or encrypted. No password is given, so
/// no KDF runs: the harness exercises the shape and parameter checks that
/// guard the KDF. A key that parses signs what its public key verifies.
pub fn secret_key(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = SecretKey::is_encrypted(text);
    let Ok(key) = SecretKey::parse(text, None) else {
        return;
    };
    let signature = key.sign(b"m", "t", "u");
    minisign::verify(&key.public_key(), b"m", &signature).expect("own signature verifies");
}

/// A trusted comment: any text is read without panicking, and a rendered
/// comment reads back its own fields.
pub fn trusted_comment(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let fields = trusted_comment::parse(text);
    if let Some(serial) = fields.serial {
        assert!(text.contains(serial));
    }
}

/// `site.toml`.
pub fn site_toml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = vmic_site::config::SiteConfig::parse(text, "site.toml");
    }
}

/// An image's sidecar (`<image>.toml`).
pub fn sidecar(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = vmic_endorser::meta::parse_toml::<vmic_endorser::meta::Sidecar>(text, "x.toml");
    }
}

/// `catalog.toml`.
pub fn catalog_toml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = vmic_endorser::meta::parse_toml::<vmic_endorser::meta::CatalogToml>(
            text,
            "catalog.toml",
        );
    }
}

/// `vo.json`: whatever parses re-serialises into a list that parses to the
/// same thing; and no list is accepted without a signature.
pub fn vo_list(data: &[u8]) {
    let unsigned =
        vmic_format::vo::authenticate_vo(data, &[], &[demo_public_key().clone()], 1, "x");
    assert!(unsigned.is_err(), "a list without signatures was accepted");
    let Ok(list) = vmic_format::vo::VoList::parse(data) else {
        return;
    };
    let again = list.to_bytes().expect("a parsed list serialises");
    let reparsed = vmic_format::vo::VoList::parse(&again).expect("a parsed list re-parses");
    assert_eq!(reparsed, list);
}

/// A rotation statement: what parses round-trips; and the statement is
/// never accepted with a signature by neither key.
pub fn rotation(data: &[u8]) {
    use vmic_format::rotation::{Rotation, authenticate_rotation};
    if let Ok(rotation) = Rotation::parse(data, "x") {
        let again = rotation.to_bytes().expect("a parsed statement serialises");
        assert_eq!(Rotation::parse(&again, "x").expect("re-parses"), rotation);
    }
    let text = String::from_utf8_lossy(data);
    let forged = authenticate_rotation(data, &text, &text, demo_public_key(), "x");
    assert!(forged.is_err(), "an unsigned rotation was accepted");
}

/// `VO.toml`.
pub fn vo_toml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = vmic_endorser::vo::check_vo_toml(text, "VO.toml");
    }
}

/// Chunk size of the image the `.part` harness downloads.
const PART_CHUNK: usize = 4096;
/// Its size: three whole chunks and a short last one.
const PART_SIZE: usize = 3 * PART_CHUNK + 100;

/// `.part` resume: whatever an earlier run (or an attacker) left in the
/// `.part` file, resuming and then receiving the rest of the image from
/// where the landing asks must end with exactly the image, verified.
pub fn part_resume(data: &[u8]) {
    let (image, expected) = part_image();
    // One directory for every run of the process: creating and removing
    // one per input would cost more than the harness itself.
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("temporary directory"));
    let path = dir.path().join("a.part");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(data))
        .expect("write the planted .part");
    let mut part = PartFile::open(&path, expected.clone(), engine(), &NoProgress)
        .expect("open the .part file");
    let mut at = part.held() as usize;
    assert!(at <= image.len(), "resume holds more than the image");
    while at < image.len() {
        let room = part.room().expect("room");
        let n = room.len().min(image.len() - at);
        room[..n].copy_from_slice(&image[at..at + n]);
        part.advance(n).expect("advance");
        at += n;
    }
    let problems = part.finish().expect("finish");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(&std::fs::read(&path).unwrap(), image);
}

fn part_image() -> &'static (Vec<u8>, Expected) {
    static IMAGE: OnceLock<(Vec<u8>, Expected)> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let image: Vec<u8> = (0..PART_SIZE).map(|i| (i * 7 + i / 251) as u8).collect();
        let chunks = image.chunks(PART_CHUNK).map(Sha256Digest::of).collect();
        let expected = Expected::new(PART_SIZE as u64, PART_CHUNK as u64, chunks).unwrap();
        (image, expected)
    })
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new(Some(1)).expect("engine"))
}

fn demo_public_key() -> &'static PublicKey {
    static KEY: OnceLock<PublicKey> = OnceLock::new();
    KEY.get_or_init(|| {
        PublicKey::parse(include_str!("../../../fixtures/demo-key/demo.key.pub")).unwrap()
    })
}
