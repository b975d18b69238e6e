//! `vmic check`: golden-image attestation. Exit 0 only if every file is
//! byte-identical to an approved, currently valid image: one the site has
//! imported or approved, or one in a catalog given on the command line
//! (authenticated as `verify` does, so a user who downloaded one image can
//! check it with one command).

use std::path::PathBuf;

use vmic_engine::attest::{Known, Standing, Verdict, attest};
use vmic_engine::fetch::{HttpClient, HttpConfig};
use vmic_engine::hashing::Engine;
use vmic_engine::publication::Publication;
use vmic_format::error::{Error, Result};
use vmic_format::limits::DEFAULT_MAX_CATALOG_BYTES;

use super::password::load_public_key;
use super::{JobsArg, Output};

#[derive(clap::Args)]
pub struct Args {
    /// The image files to check.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Check against this publication instead of the site: a directory,
    /// its catalog.json, a file:// or http(s):// URL.
    #[arg(long, value_name = "SOURCE", requires = "pubkey")]
    catalog: Option<String>,
    /// The endorser's public key for --catalog.
    #[arg(long, value_name = "FILE", requires = "catalog")]
    pubkey: Option<PathBuf>,
    #[command(flatten)]
    jobs: JobsArg,
    /// Print one JSON array, one verdict per file.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, site: &Option<PathBuf>, quiet: bool) -> Result<i32> {
    let out = Output {
        quiet,
        json: args.json,
    };
    let engine = Engine::new(args.jobs.jobs)?;
    let known = match (&args.catalog, &args.pubkey) {
        (Some(source), Some(key)) => from_catalog(source, key)?,
        _ => {
            let site = super::site::open_read_only(site)?;
            let sizes = args
                .files
                .iter()
                .filter_map(|f| std::fs::metadata(f).ok().map(|m| m.len()))
                .collect();
            let mut images = vmic_site::query::known_images(&site)?;
            images.load_digests(&site, &sizes);
            images.known
        }
    };
    let progress = super::progress::for_terminal(out.show_progress(), "checking");
    let (verdicts, _) = attest(&args.files, &known, &engine, progress.as_ref());
    drop(progress);
    report(&verdicts, out);
    Ok(exit_code(&verdicts))
}

/// The images of an authenticated catalog; all refused when it expired.
fn from_catalog(source: &str, key: &std::path::Path) -> Result<Vec<Known>> {
    let key = load_public_key(key)?;
    let client = HttpClient::new(&HttpConfig::default())?;
    let publication = Publication::open(source, &client)?;
    let authenticated = publication.authenticate(&key, DEFAULT_MAX_CATALOG_BYTES)?;
    let catalog = &authenticated.catalog;
    let expired = catalog.is_expired_at(jiff::Timestamp::now());
    let endorser = catalog.endorser().name.clone();
    let mut known = Vec::new();
    for image in catalog.images() {
        let standing = match expired {
            false => Standing::Valid,
            true => Standing::Refused {
                state: "expired".into(),
                reason: format!("its catalog expired at {}", catalog.expires()),
            },
        };
        let expected = publication.chunk_digests(image).map_err(|e| {
            Error::new(
                e.kind(),
                format!("{}: {}", publication.describe(), e.message()),
            )
        })?;
        known.push(Known {
            endorser: endorser.clone(),
            id: image.id.as_str().to_string(),
            version: image.version.as_str().to_string(),
            sha256: image.sha256,
            size: image.size(),
            file_name: vmic_site::query::file_name(image),
            standing,
            expected: Some(expected),
        });
    }
    Ok(known)
}

fn report(verdicts: &[Verdict], out: Output) {
    if out.json {
        super::print_json(&verdicts);
        return;
    }
    for v in verdicts {
        let line = format!("{} {}", v.file, v.reason);
        if v.ok {
            out.say(format!("ok      {line}"));
        } else {
            super::alert(format!("FAILED  {line}"));
            for p in v.problems.iter().take(5) {
                super::alert(format!("        {}", p.describe()));
            }
        }
    }
}

/// 0: all approved; 3: only read errors; 1: anything else.
fn exit_code(verdicts: &[Verdict]) -> i32 {
    use vmic_engine::attest::Finding;
    if verdicts.iter().all(|v| v.ok) {
        return 0;
    }
    let only_io = verdicts
        .iter()
        .filter(|v| !v.ok)
        .all(|v| v.finding == Finding::Unreadable);
    if only_io { 3 } else { 1 }
}
