//! Disk images that point outside themselves. A qcow2 `backing_file` or
//! external `data_file`, a VMDK descriptor whose extents name other files,
//! or a VMDK delta naming its parent make a hypervisor (or `qemu-img
//! convert` in an image service) open files on the host: an image that
//! reaches into the host (OpenStack OSSA-2024-001 / CVE-2024-32498, and the
//! older qcow2 backing-file leaks).
//!
//! This module reads the real on-disk headers through a caller-supplied
//! `read(offset, len)` (so it does no I/O itself) and names every such
//! reference: the field and the path it points to. Anything it cannot make
//! sense of in a header that claims such a reference is reported too: when
//! in doubt, the image points outside itself.

use serde::Serialize;

use crate::image_format::ImageFormat;

/// Largest qcow2 cluster (2 MiB): the header and its extensions, and the
/// backing file name, live in the first cluster.
const QCOW2_MAX_CLUSTER: u64 = 2 << 20;
/// A VMDK descriptor is a few KiB; more is not a descriptor.
const VMDK_MAX_DESCRIPTOR: u64 = 1 << 20;
/// qcow2 header extension: external data file name.
const QCOW2_EXT_DATA_FILE: u32 = 0x4441_5441;
/// qcow2 incompatible feature bit 2: the guest data lives in an external file.
const QCOW2_INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// VMDK create types whose extents are the file itself.
const SELF_CONTAINED_VMDK: [&str; 2] = ["monolithicSparse", "streamOptimized"];

/// One reference from an image to something outside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExternalReference {
    /// The header field (`qcow2 backing_file`, `qcow2 data_file`, `vmdk
    /// extent`, `vmdk parentFileNameHint`, …).
    pub field: String,
    /// The path or name it points to, as written (lossy UTF-8, control
    /// characters escaped).
    pub target: String,
}

impl std::fmt::Display for ExternalReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} points to {:?}", self.field, self.target)
    }
}

/// Reads `len` bytes at `offset` (fewer at the end of the file; `None` if
/// it cannot read).
pub type ReadAt<'a> = dyn FnMut(u64, usize) -> Option<Vec<u8>> + 'a;

/// Every reference outside itself that an image of `format` holds.
pub fn external_references(format: ImageFormat, read: &mut ReadAt) -> Vec<ExternalReference> {
    match format {
        ImageFormat::Qcow2 => qcow2(read),
        ImageFormat::Vmdk => vmdk(read),
        _ => Vec::new(),
    }
}

fn reference(field: &str, target: &[u8]) -> ExternalReference {
    let text: String = String::from_utf8_lossy(target)
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    ExternalReference {
        field: field.into(),
        target: text,
    }
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// The raw backing file name of a qcow2 image (`None`: it has none, or is
/// not a readable qcow2 header). `vmic audit` follows overlay chains by it.
pub fn qcow2_backing_name(read: &mut ReadAt) -> Option<Vec<u8>> {
    let header = read(0, 72).filter(|h| h.len() >= 24 && h.starts_with(b"QFI\xfb"))?;
    let offset = be_u64(&header, 8).filter(|&o| o != 0)?;
    let size = be_u32(&header, 16)?.min(4096) as usize;
    read(offset, size).filter(|n| n.len() == size && size > 0)
}

/// qcow2 (versions 2 and 3): the backing file name, and the external data
/// file (an incompatible feature bit and a header extension naming it).
fn qcow2(read: &mut ReadAt) -> Vec<ExternalReference> {
    let Some(header) = read(0, 4096).filter(|h| h.len() >= 72) else {
        return vec![reference("qcow2 header", b"(truncated: cannot tell)")];
    };
    let version = be_u32(&header, 4).unwrap_or(0);
    let backing_offset = be_u64(&header, 8).unwrap_or(0);
    let backing_size = be_u32(&header, 16).unwrap_or(0);
    let cluster_bits = be_u32(&header, 20).unwrap_or(16);
    let cluster = 1u64
        .checked_shl(cluster_bits)
        .unwrap_or(QCOW2_MAX_CLUSTER)
        .min(QCOW2_MAX_CLUSTER);
    let mut found = Vec::new();
    if backing_offset != 0 {
        let name = read(backing_offset, backing_size.min(4096) as usize)
            .filter(|n| n.len() == backing_size.min(4096) as usize)
            .unwrap_or_else(|| b"(name unreadable)".to_vec());
        found.push(reference("qcow2 backing_file", &name));
    }
    if version < 3 {
        return found;
    }
    let incompatible = be_u64(&header, 72).unwrap_or(0);
    let header_length = be_u32(&header, 100).unwrap_or(104) as u64;
    let extensions = qcow2_extensions(read, header_length, cluster);
    let named = extensions
        .iter()
        .find(|(kind, _)| *kind == QCOW2_EXT_DATA_FILE);
    match (named, incompatible & QCOW2_INCOMPAT_DATA_FILE != 0) {
        (Some((_, name)), _) => found.push(reference("qcow2 data_file", name)),
        (None, true) => found.push(reference(
            "qcow2 data_file",
            b"(external data file bit set, name given at run time)",
        )),
        (None, false) => {}
    }
    found
}

/// The header extensions of a qcow2 v3 image: (type, data), up to the end
/// marker or the first cluster's end.
fn qcow2_extensions(read: &mut ReadAt, start: u64, cluster: u64) -> Vec<(u32, Vec<u8>)> {
    let Some(area) = read(start, cluster.saturating_sub(start) as usize) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut at = 0usize;
    while let (Some(kind), Some(len)) = (be_u32(&area, at), be_u32(&area, at + 4)) {
        if kind == 0 {
            break;
        }
        let data_at = at + 8;
        let Some(data) = area.get(data_at..data_at + len as usize) else {
            break;
        };
        found.push((kind, data.to_vec()));
        at = data_at + (len as usize).div_ceil(8) * 8;
    }
    found
}

/// VMDK: a text descriptor (a file that is only a descriptor: every extent
/// is another file), or a sparse extent (`KDMV`) with an embedded
/// descriptor, which is self-contained only for the create types whose
/// extent is the file itself.
fn vmdk(read: &mut ReadAt) -> Vec<ExternalReference> {
    let Some(head) = read(0, 512) else {
        return vec![reference("vmdk header", b"(unreadable: cannot tell)")];
    };
    if head.starts_with(b"KDMV") {
        // Offsets in sectors: descriptorOffset at 28, descriptorSize at 36.
        let offset = le_u64(&head, 28).unwrap_or(0).saturating_mul(512);
        let size = le_u64(&head, 36)
            .unwrap_or(0)
            .saturating_mul(512)
            .min(VMDK_MAX_DESCRIPTOR);
        if offset == 0 || size == 0 {
            // A sparse extent without a descriptor is only ever a part of a
            // descriptor-file image: on its own it names nothing.
            return Vec::new();
        }
        let descriptor = read(offset, size as usize).unwrap_or_default();
        return descriptor_references(&descriptor, true);
    }
    if head.starts_with(b"COWD") {
        // ESX sparse (COWD) may carry a parent file name at offset 32.
        let name = head.get(32..32 + 60).unwrap_or_default();
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        if end == 0 {
            return Vec::new();
        }
        return vec![reference("vmdk COWD parentFileName", &name[..end])];
    }
    let descriptor = read(0, VMDK_MAX_DESCRIPTOR as usize).unwrap_or_default();
    descriptor_references(&descriptor, false)
}

/// The references in a VMDK descriptor's text. `embedded`: the descriptor
/// lives inside a sparse extent, whose own extent line names the file
/// itself when the create type is self-contained.
fn descriptor_references(text: &[u8], embedded: bool) -> Vec<ExternalReference> {
    let text = String::from_utf8_lossy(text);
    let text = text.split('\0').next().unwrap_or_default();
    let mut create_type = None;
    let mut found = Vec::new();
    let mut extents = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(value) = assignment(line, "createType") {
            create_type = Some(value.to_string());
        } else if let Some(value) = assignment(line, "parentFileNameHint") {
            found.push(reference("vmdk parentFileNameHint", value.as_bytes()));
        } else if let Some(name) = extent_file(line) {
            extents.push(name);
        }
    }
    let self_contained = embedded
        && create_type
            .as_deref()
            .is_some_and(|t| SELF_CONTAINED_VMDK.contains(&t));
    if !self_contained {
        for name in extents {
            found.push(reference("vmdk extent", name.as_bytes()));
        }
        if embedded && create_type.is_none() {
            found.push(reference("vmdk createType", b"(missing: cannot tell)"));
        }
    }
    found
}

/// `key = "value"` or `key=value` → value without quotes.
fn assignment<'t>(line: &'t str, key: &str) -> Option<&'t str> {
    let rest = line.strip_prefix(key)?.trim_start().strip_prefix('=')?;
    Some(rest.trim().trim_matches('"'))
}

/// An extent line, `RW 2048 FLAT "file.vmdk" 0`, → the quoted file name.
fn extent_file(line: &str) -> Option<&str> {
    let access = ["RW ", "RDONLY ", "NOACCESS "];
    if !access.iter().any(|a| line.starts_with(a)) {
        return None;
    }
    let start = line.find('"')? + 1;
    let end = start + line[start..].find('"')?;
    Some(&line[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &[u8]) -> impl FnMut(u64, usize) -> Option<Vec<u8>> + '_ {
        move |offset, len| {
            let start = usize::try_from(offset).ok()?.min(bytes.len());
            let end = start.saturating_add(len).min(bytes.len());
            Some(bytes[start..end].to_vec())
        }
    }

    fn qcow2_header(version: u32, backing: &str) -> Vec<u8> {
        let mut h = vec![0u8; 65536];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&version.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[100..104].copy_from_slice(&112u32.to_be_bytes());
        if !backing.is_empty() {
            h[8..16].copy_from_slice(&512u64.to_be_bytes());
            h[16..20].copy_from_slice(&(backing.len() as u32).to_be_bytes());
            h[512..512 + backing.len()].copy_from_slice(backing.as_bytes());
        }
        h
    }

    #[test]
    fn a_plain_qcow2_points_nowhere_and_a_backing_file_is_named() {
        let plain = qcow2_header(3, "");
        assert!(external_references(ImageFormat::Qcow2, &mut reader(&plain)).is_empty());
        let backed = qcow2_header(2, "/etc/shadow");
        let found = external_references(ImageFormat::Qcow2, &mut reader(&backed));
        assert_eq!(found, vec![reference("qcow2 backing_file", b"/etc/shadow")]);
    }

    #[test]
    fn a_qcow2_data_file_is_named_by_its_extension_or_its_feature_bit() {
        let mut h = qcow2_header(3, "");
        let name = b"/dev/sda";
        h[112..116].copy_from_slice(&QCOW2_EXT_DATA_FILE.to_be_bytes());
        h[116..120].copy_from_slice(&(name.len() as u32).to_be_bytes());
        h[120..128].copy_from_slice(name);
        let found = external_references(ImageFormat::Qcow2, &mut reader(&h));
        assert_eq!(found, vec![reference("qcow2 data_file", b"/dev/sda")]);
        let mut bit_only = qcow2_header(3, "");
        bit_only[72..80].copy_from_slice(&QCOW2_INCOMPAT_DATA_FILE.to_be_bytes());
        let found = external_references(ImageFormat::Qcow2, &mut reader(&bit_only));
        assert_eq!(found[0].field, "qcow2 data_file");
    }

    #[test]
    fn vmdk_descriptors_name_their_extents_unless_self_contained() {
        let flat = b"# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"/etc/passwd\" 0\n";
        let found = external_references(ImageFormat::Vmdk, &mut reader(flat));
        assert_eq!(found, vec![reference("vmdk extent", b"/etc/passwd")]);
        let mut sparse = vec![0u8; 4096];
        sparse[..4].copy_from_slice(b"KDMV");
        sparse[28..36].copy_from_slice(&1u64.to_le_bytes());
        sparse[36..44].copy_from_slice(&2u64.to_le_bytes());
        let own = b"# Disk DescriptorFile\ncreateType=\"monolithicSparse\"\nRW 2048 SPARSE \"disk.vmdk\"\n";
        sparse[512..512 + own.len()].copy_from_slice(own);
        assert!(external_references(ImageFormat::Vmdk, &mut reader(&sparse)).is_empty());
        let hostile = b"# Disk DescriptorFile\ncreateType=\"vmfs\"\nRW 2048 VMFS \"/dev/sdb\"\n";
        sparse[512..1024].fill(0);
        sparse[512..512 + hostile.len()].copy_from_slice(hostile);
        let found = external_references(ImageFormat::Vmdk, &mut reader(&sparse));
        assert_eq!(found, vec![reference("vmdk extent", b"/dev/sdb")]);
    }

    #[test]
    fn a_vmdk_delta_names_its_parent_and_control_characters_are_escaped() {
        let delta = b"# Disk DescriptorFile\ncreateType=\"monolithicSparse\"\nparentFileNameHint=\"base\x1b[2J.vmdk\"\n";
        let found = external_references(ImageFormat::Vmdk, &mut reader(delta));
        assert_eq!(found[0].field, "vmdk parentFileNameHint");
        assert!(!found[0].target.contains('\x1b'), "{}", found[0].target);
    }

    #[test]
    fn a_truncated_header_is_reported_not_trusted() {
        let found = external_references(ImageFormat::Qcow2, &mut reader(b"QFI\xfb\0\0"));
        assert_eq!(found[0].field, "qcow2 header");
        assert!(external_references(ImageFormat::Raw, &mut reader(b"")).is_empty());
    }
}
