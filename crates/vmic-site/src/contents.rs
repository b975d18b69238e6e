//! What the site checks in verified bytes before importing them: the
//! signature and digests prove the endorser published these bytes, not
//! that they are safe to hand to a hypervisor. The format read from the
//! bytes must be the one the catalog claims (the claim names the store file,
//! sets the hook's `VMIC_IMAGE_FORMAT` and feeds `format` deny rules), and
//! an image whose headers point outside it (a qcow2 backing or data file, a
//! VMDK extent or parent: CVE-2024-32498) is refused even when signed,
//! unless `policy.allow_external_references`.

use std::path::Path;

use vmic_engine::detect::inspect;
use vmic_format::catalog::Image;

use crate::error::Result;
use crate::site::Site;

/// Why the site refuses the verified bytes at `path` as `image`, if it does.
pub fn refusal(site: &Site, image: &Image, path: &Path) -> Result<Option<String>> {
    let found = inspect(path)?;
    let Some(claimed) = image.format.known_format() else {
        return Ok(Some(format!(
            "the catalog says format {:?}, which this vmic cannot check against the bytes ({}); upgrade vmic",
            image.format.as_str(),
            found.format.as_str()
        )));
    };
    if claimed != found.format {
        return Ok(Some(format!(
            "the catalog says format {}, but the bytes are {}",
            claimed.as_str(),
            found.format.as_str()
        )));
    }
    if found.external.is_empty() || site.config.policy.allow_external_references {
        return Ok(None);
    }
    let references: Vec<String> = found.external.iter().map(ToString::to_string).collect();
    Ok(Some(format!(
        "the image points outside itself ({}): a host running it would open those files (policy.allow_external_references allows it)",
        references.join("; ")
    )))
}
