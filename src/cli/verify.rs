//! `vmic verify`: check a published catalog and its images against a key.

use std::path::PathBuf;

use vmic_engine::fetch::{HttpClient, HttpConfig};
use vmic_engine::hashing::Engine;
use vmic_engine::publication::Publication;
use vmic_engine::verify::{VerifyOptions, VerifyReport, verify};
use vmic_format::error::Result;
use vmic_format::limits::DEFAULT_MAX_CATALOG_BYTES;

use super::password::load_public_key;
use super::{JobsArg, Output};

/// Verify the signature, format, expiry and every image of a catalog.
#[derive(clap::Args)]
pub struct Args {
    /// Published directory, its catalog.json, a file:// URL, or an
    /// http(s):// URL (remote images are hashed as they stream past).
    source: String,
    /// The endorser's minisign public key.
    #[arg(long, value_name = "FILE")]
    pubkey: PathBuf,
    /// Check only the signed catalog, not the images.
    #[arg(long)]
    catalog_only: bool,
    /// Accept an expired catalog (a loud warning is printed). For air-gapped use.
    #[arg(long)]
    allow_expired: bool,
    #[command(flatten)]
    jobs: JobsArg,
    /// Refuse catalogs larger than this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_CATALOG_BYTES)]
    max_catalog_size: u64,
    /// Print one JSON document with the full result.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, quiet: bool) -> Result<i32> {
    let out = Output {
        quiet,
        json: args.json,
    };
    let engine = Engine::new(args.jobs.jobs)?;
    let key = load_public_key(&args.pubkey)?;
    let opts = VerifyOptions {
        key: &key,
        catalog_only: args.catalog_only,
        allow_expired: args.allow_expired,
        max_catalog_bytes: args.max_catalog_size,
        now: None,
    };
    let result = HttpClient::new(&HttpConfig::default())
        .and_then(|client| Publication::open(&args.source, &client))
        .and_then(|publication| {
            let progress = super::progress::for_terminal(out.show_progress(), "verifying");
            verify(&publication, &opts, &engine, progress.as_ref())
        });
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            if args.json {
                super::print_json(&serde_json::json!({
                    "ok": false,
                    "source": args.source,
                    "error": e.message(),
                    "exit_code": super::exit_code(Some(e.kind())),
                }));
            }
            return Ok(super::report_error(&e));
        }
    };
    for w in &report.warnings {
        out.warn(w);
    }
    if args.json {
        super::print_json(&report);
    } else {
        print_human(&report, out);
    }
    Ok(super::exit_code(report.failure_kind()))
}

/// The human report: one line per image, failures on stderr (at most 20
/// problems per image; `--json` lists all).
fn print_human(report: &VerifyReport, out: Output) {
    out.say(format!(
        "signature ok: {} serial {} by {} (key {}), valid until {}",
        report.source, report.serial, report.endorser, report.key_id, report.expires
    ));
    if !report.catalog_only {
        for image in &report.images {
            if image.ok {
                out.say(format!(
                    "ok      {}@{}  {}",
                    image.id, image.version, image.path
                ));
            }
        }
    }
    for image in report.images.iter().filter(|i| !i.ok) {
        const SHOWN: usize = 20;
        if image.problems.len() > SHOWN {
            super::alert(format!(
                "FAILED  {}@{}  {}: {} problems, the first {SHOWN} follow (--json lists all)",
                image.id,
                image.version,
                image.path,
                image.problems.len()
            ));
        }
        for p in image.problems.iter().take(SHOWN) {
            super::alert(format!(
                "FAILED  {}@{}  {}: {}",
                image.id,
                image.version,
                image.path,
                p.describe()
            ));
        }
    }
    let failed = report.images.iter().filter(|i| !i.ok).count();
    if report.catalog_only {
        out.say(format!(
            "catalog ok ({} images listed, not checked)",
            report.images.len()
        ));
    } else if failed == 0 {
        out.say(format!("all {} images verified", report.images.len()));
    } else {
        super::alert(format!(
            "vmic: {failed} of {} images FAILED verification",
            report.images.len()
        ));
    }
}
