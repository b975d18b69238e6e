//! Endorser-supplied metadata: `catalog.toml` at the root of the images
//! directory and an optional `<image file>.toml` sidecar per image.
//!
//! Both are strict: unknown keys are errors naming the file and line, because
//! a misspelt `min_memroy_mb` silently ignored would publish wrong metadata.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use vmic_format::ids::{ImageId, Version};

use crate::error::{Error, Result};

pub const CATALOG_TOML: &str = "catalog.toml";
pub const SIDECAR_SUFFIX: &str = ".toml";

/// `catalog.toml`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogToml {
    #[serde(default)]
    pub endorser: EndorserToml,
    #[serde(default)]
    pub catalog: CatalogSettings,
    #[serde(default)]
    pub revoke: Vec<RevokeToml>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndorserToml {
    pub name: Option<String>,
    pub contact: Option<String>,
    pub vo: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSettings {
    /// Default validity, e.g. "30d"; `--expires` overrides it.
    pub expires: Option<String>,
    /// Where the published directory will be served; `--base-url` overrides it.
    pub base_url: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeToml {
    pub id: ImageId,
    pub version: Option<Version>,
    pub reason: String,
}

/// `<image>.toml`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    pub id: Option<ImageId>,
    pub version: Option<Version>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub os_family: Option<String>,
    pub os: Option<String>,
    pub os_version: Option<String>,
    pub arch: Option<String>,
    pub hypervisor: Option<String>,
    pub min_cores: Option<u32>,
    pub min_memory_mb: Option<u64>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Read and parse one of vmic's TOML files; errors name the file and line.
pub fn load_toml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    vmic_format::strict_toml::parse(&text, &path.display().to_string())
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
