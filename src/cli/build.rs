//! `vmic build`: compile a directory of images into a signed catalog.

use std::path::PathBuf;

use vmic_endorser::build::{BuildOptions, build};
use vmic_engine::fsutil::Placement;
use vmic_engine::hashing::{DEFAULT_CHUNK_SIZE, Engine, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use vmic_format::catalog::CatalogVersion;
use vmic_format::error::{Error, Result};

use super::Output;
use super::password::{PasswordArgs, load_secret_key};

/// Hash, describe, sign and render IMAGES_DIR into OUT_DIR.
#[derive(clap::Args)]
pub struct Args {
    /// Directory of images (with optional catalog.toml and <image>.toml sidecars).
    images_dir: PathBuf,
    /// Secret key (minisign format).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Output directory: the whole publication.
    #[arg(long, value_name = "OUT_DIR")]
    out: PathBuf,
    /// Validity of the catalog, e.g. 12h, 30d (default: catalog.toml's, else 30d).
    #[arg(long, value_name = "DURATION")]
    expires: Option<String>,
    /// URL the output directory will be served from; adds absolute image URLs.
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// Base URL of a full mirror of the publication (e.g. kept by `vmic
    /// mirror`), named in the signed catalog; sites try it after their own
    /// sources. Repeat for several.
    #[arg(long, value_name = "URL")]
    mirror: Vec<String>,
    /// Do not copy images into OUT_DIR/images (publish them separately).
    #[arg(long, conflicts_with = "link_images")]
    no_images: bool,
    /// Hard-link images into OUT_DIR/images instead of copying them (no
    /// extra space, but a write in the web root then changes the source:
    /// a later build refuses to sign it under a version a sidecar fixed,
    /// and publishes it under a new version otherwise).
    #[arg(long)]
    link_images: bool,
    #[command(flatten)]
    state_dir: super::StateDirArg,
    /// Ignore the digest cache and hash every image again.
    #[arg(long)]
    rehash: bool,
    /// Sign other bytes under an id@version already published (emergencies
    /// only; normally give the image a new version).
    #[arg(long)]
    allow_rewrite: bool,
    #[command(flatten)]
    jobs: super::JobsArg,
    /// Chunk size for per-chunk digests, e.g. 8M (default), 64K.
    #[arg(long, value_name = "SIZE")]
    chunk_size: Option<String>,
    /// Catalog format: 2 (default) keeps chunk digests in per-image index
    /// files, so the catalog stays small; 1 keeps them inline, for sites
    /// still running a vmic that reads only `vmic.catalog/1`.
    #[arg(long, value_name = "1|2", default_value = "2", value_parser = parse_catalog_version)]
    catalog_version: CatalogVersion,
    #[command(flatten)]
    password: PasswordArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, quiet: bool) -> Result<i32> {
    let out = Output {
        quiet,
        json: args.json,
    };
    let expires_secs = args
        .expires
        .as_deref()
        .map(vmic_format::duration::parse_seconds)
        .transpose()?;
    let chunk_size = match &args.chunk_size {
        Some(text) => parse_size(text)?,
        None => DEFAULT_CHUNK_SIZE,
    };
    if let Some(url) = &args.base_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(Error::input(format!(
            "--base-url {url:?} must be an http(s) URL"
        )));
    }
    let engine = Engine::new(args.jobs.jobs)?;
    let key = load_secret_key(&args.key, &args.password)?;
    let opts = BuildOptions {
        images_dir: args.images_dir,
        out_dir: args.out,
        key: &key,
        expires_secs,
        base_url: args.base_url,
        mirrors: args
            .mirror
            .iter()
            .map(|u| vmic_format::catalog::HttpUrl::parse(u).map_err(|e| Error::input(e.0)))
            .collect::<Result<Vec<_>>>()?,
        images: match (args.no_images, args.link_images) {
            (true, _) => None,
            (false, true) => Some(Placement::HardLink),
            (false, false) => Some(Placement::Copy),
        },
        state_root: args.state_dir.root()?,
        rehash: args.rehash,
        chunk_size,
        catalog_version: args.catalog_version,
        allow_rewrite: args.allow_rewrite,
        now: None,
    };
    let progress = super::progress::for_terminal(out.show_progress(), "hashing");
    let report = build(&opts, &engine, progress.as_ref())?;
    drop(progress);
    for w in &report.warnings {
        out.warn(w);
    }
    if args.json {
        super::print_json(&report);
    } else {
        out.say(format!(
            "built catalog serial {} with {} image(s) in {} (key {})",
            report.serial, report.images, report.out_dir, report.key_id
        ));
        out.say(format!(
            "hashed {} image(s), {} bytes; {} reused from the digest cache",
            report.hashed, report.bytes_hashed, report.reused_from_cache
        ));
        out.say(format!(
            "valid from {} until {}",
            report.issued, report.expires
        ));
        for removed in &report.removed_images {
            out.say(format!("removed stale {removed}"));
        }
    }
    Ok(0)
}

fn parse_catalog_version(text: &str) -> std::result::Result<CatalogVersion, String> {
    CatalogVersion::parse(text).map_err(|e| e.0)
}

/// `8M`, `64K`, `1G` or plain bytes, within the allowed chunk sizes.
fn parse_size(text: &str) -> Result<u64> {
    let bad = || Error::input(format!("invalid size {text:?}: use e.g. 64K, 8M, 1G"));
    let (digits, scale) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&text[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let size = n.checked_mul(scale).ok_or_else(bad)?;
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) {
        return Err(Error::input(format!(
            "chunk size {text} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE} bytes"
        )));
    }
    Ok(size)
}
