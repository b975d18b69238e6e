//! `vmic images`: the images the site knows, with their state and why,
//! filtered by endorser, VO, state and catalog fields (use case 3.5).

use std::path::PathBuf;

use vmic_format::error::Result;
use vmic_site::model::{ImageState, StoredText};
use vmic_site::query::{ImageQuery, find};

use super::Output;

#[derive(clap::Args)]
pub struct Args {
    /// Only images of this endorser.
    #[arg(long, value_name = "NAME")]
    endorser: Option<String>,
    /// Only images of endorsers this VO lists.
    #[arg(long, value_name = "VO")]
    vo: Option<String>,
    /// Only images in this state (pending, approved, imported, rejected,
    /// quarantined, revoked, expired).
    #[arg(long, value_name = "STATE", value_parser = parse_state)]
    state: Option<ImageState>,
    /// Only images of this OS (catalog `os`, ignoring case).
    #[arg(long)]
    os: Option<String>,
    /// Only images of this OS version.
    #[arg(long, value_name = "VERSION")]
    os_version: Option<String>,
    /// Only images for this CPU architecture.
    #[arg(long)]
    arch: Option<String>,
    /// Only images of this format (qcow2, vmdk, raw, …).
    #[arg(long)]
    format: Option<String>,
    /// Only images with this tag.
    #[arg(long)]
    tag: Option<String>,
    /// Only images that run on N cores (their min_cores is at most N).
    #[arg(long, value_name = "N")]
    min_cores: Option<u32>,
    /// Only images that run in this much memory: MiB, or with a unit (4G,
    /// 512M); their min_memory_mb is at most it.
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    min_memory: Option<u64>,
    /// Print JSON: every catalog field of each image (`catalog`), its state,
    /// store path and VOs.
    #[arg(long)]
    json: bool,
}

fn parse_state(text: &str) -> std::result::Result<ImageState, String> {
    ImageState::from_stored(text).ok_or_else(|| {
        let all: Vec<&str> = ImageState::ALL.iter().map(|s| s.as_str()).collect();
        format!("{text:?} is not a state ({})", all.join(", "))
    })
}

/// MiB: `4096`, `4096M`, `4G`.
fn parse_memory(text: &str) -> std::result::Result<u64, String> {
    let (digits, scale) = match text.strip_suffix(['G', 'g']) {
        Some(d) => (d, 1024),
        None => (text.strip_suffix(['M', 'm']).unwrap_or(text), 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{text:?} is not a memory size in MiB (4096, 512M, 4G)"))
}

pub fn run(args: Args, site: &Option<PathBuf>, quiet: bool) -> Result<i32> {
    let out = Output {
        quiet,
        json: args.json,
    };
    let site = super::site::open_read_only(site)?;
    let query = ImageQuery {
        endorser: args.endorser,
        vo: args.vo,
        state: args.state,
        os: args.os,
        os_version: args.os_version,
        arch: args.arch,
        format: args.format,
        tag: args.tag,
        cores: args.min_cores,
        memory_mb: args.min_memory,
    };
    let found = find(&site, &query)?;
    if args.json {
        super::print_json(&found);
        return Ok(0);
    }
    if found.is_empty() {
        out.say("no images match (run `vmic sync` if none are known yet)");
    }
    for d in found {
        let r = &d.summary;
        let path = r
            .store_path
            .as_ref()
            .map(|p| format!("  store/{p}"))
            .unwrap_or_default();
        let title = d.catalog.title.as_deref().unwrap_or_default();
        out.say(format!(
            "{:11} {}/{}@{}  {} bytes  {title}  {}{path}",
            r.state, r.endorser, r.id, r.version, r.size, r.reason
        ));
    }
    Ok(0)
}
