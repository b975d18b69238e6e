//! Helpers shared by the unit tests of this crate: catalogs and rows made
//! from a few literals.

use serde_json::json;
use vmic_format::catalog::Catalog;
use vmic_format::digest::Sha256Digest;
use vmic_format::ids::EndorserName;

use crate::model::{Decider, ImageState};
use crate::plan::new_row;
use crate::state::ImageRow;

/// The endorser name the helpers use.
pub(crate) fn lab() -> EndorserName {
    EndorserName::parse("lab").unwrap()
}

/// A catalog listing `images` (id, version, content) and revoking
/// `revoked` (id, optional version).
pub(crate) fn catalog(images: &[(&str, &str, &[u8])], revoked: &[(&str, Option<&str>)]) -> Catalog {
    let images: Vec<_> = images
        .iter()
        .map(|(id, version, bytes)| {
            let d = Sha256Digest::of(bytes).to_hex();
            json!({
                "id": id, "version": version, "path": format!("images/{id}-{version}"),
                "size": bytes.len(), "sha256": d, "chunk_size": 4096, "chunks": [d],
                "format": "raw", "os": "linux", "tags": ["cloud"]
            })
        })
        .collect();
    let revoked: Vec<_> = revoked
        .iter()
        .map(|(id, version)| {
            let mut r = json!({"id": id, "reason": "broken", "revoked_at": "2026-01-01T00:00:00Z"});
            if let Some(v) = version {
                r["version"] = json!(v);
            }
            r
        })
        .collect();
    let v = json!({
        "format": "vmic.catalog/1",
        "endorser": {"name": "Lab", "key_id": "0000000000000001"},
        "serial": 1,
        "issued": "2026-01-01T00:00:00Z",
        "expires": "2026-02-01T00:00:00Z",
        "images": images,
        "revoked": revoked
    });
    Catalog::parse(&serde_json::to_vec(&v).unwrap()).unwrap()
}

/// The row a site holds after deciding `state` about image `id@version`
/// of `c`, decided by `by`.
pub(crate) fn row(
    c: &Catalog,
    id: &str,
    version: &str,
    state: ImageState,
    by: Decider,
) -> ImageRow {
    let mut r = new_row(&lab(), c.image(id, version).unwrap(), state, "earlier");
    r.decided_by = by;
    r
}
