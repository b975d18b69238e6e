//! Endorser-supplied metadata: `catalog.toml` at the root of the images
//! directory and an optional `<image file>.toml` sidecar per image.
//!
//! Both are strict: unknown keys are errors naming the file and line, because
//! a misspelt `min_memroy_mb` silently ignored would publish wrong metadata.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use vmic_format::ids::{ImageId, Version};

use crate::error::{Error, Result};

/// The optional catalog settings file at the root of the images directory.
pub const CATALOG_TOML: &str = "catalog.toml";
/// What a sidecar adds to its image's file name.
pub const SIDECAR_SUFFIX: &str = ".toml";

/// `catalog.toml`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogToml {
    /// `[endorser]`.
    #[serde(default)]
    pub endorser: EndorserToml,
    /// `[catalog]`.
    #[serde(default)]
    pub catalog: CatalogSettings,
    /// `[[revoke]]` entries.
    #[serde(default)]
    pub revoke: Vec<RevokeToml>,
}

/// `[endorser]`: who publishes.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndorserToml {
    /// Human name (default: the images directory's name).
    pub name: Option<String>,
    /// Contact (URL or mailto:).
    pub contact: Option<String>,
    /// Virtual organisation.
    pub vo: Option<String>,
}

/// `[catalog]`: publication settings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSettings {
    /// Default validity, e.g. "30d"; `--expires` overrides it.
    pub expires: Option<String>,
    /// Where the published directory will be served; `--base-url` overrides it.
    pub base_url: Option<String>,
}

/// One `[[revoke]]`: an id (all versions, or one) and why.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeToml {
    /// The revoked id.
    pub id: ImageId,
    /// One version, or every version when absent.
    pub version: Option<Version>,
    /// Why, for the sites' logs.
    pub reason: String,
}

/// `<image>.toml`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// Image id (default: from the file name).
    pub id: Option<ImageId>,
    /// Version (default: the first 12 hex digits of the SHA-256).
    pub version: Option<Version>,
    /// One-line title.
    pub title: Option<String>,
    /// Longer description.
    pub description: Option<String>,
    /// OS family.
    pub os_family: Option<String>,
    /// OS name.
    pub os: Option<String>,
    /// OS version.
    pub os_version: Option<String>,
    /// CPU architecture.
    pub arch: Option<String>,
    /// Hypervisor.
    pub hypervisor: Option<String>,
    /// Minimum cores.
    pub min_cores: Option<u32>,
    /// Minimum memory in MiB.
    pub min_memory_mb: Option<u64>,
    /// Free tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Publish the image although its headers point outside it (a qcow2
    /// backing or data file, a VMDK extent or parent): sites refuse such
    /// images unless their policy allows them.
    #[serde(default)]
    pub allow_external_references: bool,
}

/// Read and parse one of vmic's TOML files; errors name the file and line.
pub fn load_toml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    parse_toml(&text, &path.display().to_string())
}

/// Parse the text of `catalog.toml` or of a sidecar; `origin` names it in
/// errors.
pub fn parse_toml<T: for<'de> Deserialize<'de>>(text: &str, origin: &str) -> Result<T> {
    vmic_format::strict_toml::parse(text, origin)
}

/// `catalog.toml` if present, defaults otherwise. Ids and versions are
/// validated while parsing, so errors name the file and line.
pub fn load_catalog_toml(images_dir: &Path) -> Result<CatalogToml> {
    let path = images_dir.join(CATALOG_TOML);
    if !path.exists() {
        return Ok(CatalogToml::default());
    }
    load_toml(&path)
}

/// The sidecar path for an image file.
pub fn sidecar_path(image: &Path) -> PathBuf {
    let mut name = image.as_os_str().to_owned();
    name.push(SIDECAR_SUFFIX);
    PathBuf::from(name)
}

/// Load a sidecar.
pub fn load_sidecar(path: &Path) -> Result<Sidecar> {
    load_toml(path)
}
