//! Image format detection from magic bytes, never from the file name, and
//! the format names a catalog may carry.

use crate::ids::{InvalidValue, Token, TokenKind};

/// Formats vmic recognises. `Unknown` is published as-is: endorsers may
/// distribute formats vmic does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// VMware virtual disk (sparse extent or text descriptor).
    Vmdk,
    /// Hyper-V VHDX.
    Vhdx,
    /// Virtual PC / Hyper-V VHD (fixed or dynamic).
    Vhd,
    /// ISO 9660 optical disc image.
    Iso,
    /// Open Virtualization Archive (a tar whose first member is the `.ovf`).
    Ova,
    /// Raw disk: no magic, size a multiple of 512.
    Raw,
    /// Anything else; published as-is.
    Unknown,
}

impl ImageFormat {
    /// The name used in catalogs and store file names.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Vmdk => "vmdk",
            ImageFormat::Vhdx => "vhdx",
            ImageFormat::Vhd => "vhd",
            ImageFormat::Iso => "iso",
            ImageFormat::Ova => "ova",
            ImageFormat::Raw => "raw",
            ImageFormat::Unknown => "unknown",
        }
    }

    /// The format with this name, if vmic knows it.
    pub fn from_name(name: &str) -> Option<ImageFormat> {
        [
            ImageFormat::Qcow2,
            ImageFormat::Vmdk,
            ImageFormat::Vhdx,
            ImageFormat::Vhd,
            ImageFormat::Iso,
            ImageFormat::Ova,
            ImageFormat::Raw,
            ImageFormat::Unknown,
        ]
        .into_iter()
        .find(|f| f.as_str() == name)
    }
}

/// The `format` of a catalog image: one of the [`ImageFormat`] names, or
/// another token that a newer writer may use (kept, not refused).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FormatName(String);

impl FormatName {
    /// The name of a format vmic detects.
    pub fn known(format: ImageFormat) -> FormatName {
        FormatName(format.as_str().into())
    }

    /// Parse a format name from a catalog.
    pub fn parse(text: &str) -> Result<FormatName, InvalidValue> {
        if ImageFormat::from_name(text).is_none() {
            Token::<FormatKind>::parse(text)?;
        }
        Ok(FormatName(text.into()))
    }

    /// The format, when vmic knows it.
    pub fn known_format(&self) -> Option<ImageFormat> {
        ImageFormat::from_name(&self.0)
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for FormatName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for FormatName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for FormatName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        FormatName::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Marker: format names outside the known list follow the token alphabet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct FormatKind;
impl TokenKind for FormatKind {
    const WHAT: &'static str = "format";
}

/// Classify an image from its first bytes (at least 0x8006 when the file
/// is that long), its last 512 bytes and its length.
pub fn classify(head: &[u8], footer: Option<&[u8]>, len: u64) -> ImageFormat {
    let starts = |magic: &[u8]| head.starts_with(magic);
    if starts(b"QFI\xfb") {
        return ImageFormat::Qcow2;
    }
    // Sparse extent ("KDMV") or a text descriptor of a monolithic/split VMDK.
    if starts(b"KDMV") || starts(b"COWD") || starts(b"# Disk DescriptorFile") {
        return ImageFormat::Vmdk;
    }
    if starts(b"vhdxfile") {
        return ImageFormat::Vhdx;
    }
    // Dynamic VHDs carry a copy of the footer at offset 0; fixed ones only at the end.
    if starts(b"conectix") || footer.is_some_and(|f| f.starts_with(b"conectix")) {
        return ImageFormat::Vhd;
    }
    if head.len() >= 0x8006 && &head[0x8001..0x8006] == b"CD001" {
        return ImageFormat::Iso;
    }
    // An OVA is a tar archive whose first member is the .ovf descriptor.
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        let name_end = head[..100].iter().position(|&b| b == 0).unwrap_or(100);
        if head[..name_end].ends_with(b".ovf") {
            return ImageFormat::Ova;
        }
        return ImageFormat::Unknown;
    }
    // Raw disks have no magic; a sector-aligned size (possibly with an MBR
    // or GPT) is the best evidence there is.
    if len > 0 && len.is_multiple_of(512) {
        return ImageFormat::Raw;
    }
    ImageFormat::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_wins_over_everything() {
        assert_eq!(
            classify(b"QFI\xfb\0\0\0\x03", None, 1000),
            ImageFormat::Qcow2
        );
        assert_eq!(classify(b"KDMV\x01", None, 1000), ImageFormat::Vmdk);
        assert_eq!(classify(b"vhdxfile", None, 1000), ImageFormat::Vhdx);
        let mut footer = vec![0u8; 512];
        footer[..8].copy_from_slice(b"conectix");
        assert_eq!(classify(&[0u8; 16], Some(&footer), 4096), ImageFormat::Vhd);
    }

    #[test]
    fn iso_and_ova_and_raw() {
        let mut iso = vec![0u8; 0x8006];
        iso[0x8001..0x8006].copy_from_slice(b"CD001");
        assert_eq!(classify(&iso, None, 0x10000), ImageFormat::Iso);
        let mut tar = vec![0u8; 512];
        tar[..8].copy_from_slice(b"vm.ovf\0\0");
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(classify(&tar, None, 10240), ImageFormat::Ova);
        assert_eq!(classify(&[0u8; 16], None, 1 << 20), ImageFormat::Raw);
        assert_eq!(classify(b"hello", None, 5), ImageFormat::Unknown);
    }
}
