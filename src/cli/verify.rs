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
    /// The endorser's minisign public key (with --vo: a VO manager's key;
    /// repeat for each).
    #[arg(long, value_name = "FILE", required = true)]
    pubkey: Vec<PathBuf>,
    /// SOURCE is a VO list (vo.json): check its signatures against the
    /// managers' keys and --threshold, its format and its expiry.
    #[arg(long)]
    vo: bool,
    /// With --vo: signatures by distinct keys the list needs.
    #[arg(long, value_name = "K", default_value_t = 1, requires = "vo")]
    threshold: u32,
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

/// `verify --vo`: the newest list the source offers that meets the
/// threshold, then its expiry.
fn verify_vo(args: &Args, out: Output) -> Result<i32> {
    let keys = args
        .pubkey
        .iter()
        .map(|p| load_public_key(p))
        .collect::<Result<Vec<_>>>()?;
    let client = HttpClient::new(&HttpConfig::default())?;
    let checked = vmic_engine::vo_source::open_vo_source(&args.source, &client)
        .and_then(|t| vmic_engine::vo_source::read_vo_candidates(&*t, &keys, None))
        .and_then(|c| vmic_engine::vo_source::newest_authentic(c, &keys, args.threshold));
    let newest = match checked {
        Ok(newest) => newest,
        Err(e) => return Ok(super::report_error(&e)),
    };
    let list = &newest.list.list;
    let expired = list.is_expired_at(jiff::Timestamp::now());
    let signed_by: Vec<String> = newest
        .list
        .signed_by
        .iter()
        .map(ToString::to_string)
        .collect();
    if args.json {
        super::print_json(&serde_json::json!({
            "ok": !expired || args.allow_expired,
            "vo": list.vo.as_str(),
            "serial": list.serial.get(),
            "expires": list.expires.to_string(),
            "expired": expired,
            "signed_by": signed_by,
            "endorsers": list.endorsers.len(),
            "removed": list.removed.len(),
        }));
    } else {
        out.say(format!(
            "VO {} list serial {}: signed by {} of the given keys ({}), {} endorser(s), {} removed, valid until {}",
            list.vo,
            list.serial,
            signed_by.len(),
            signed_by.join(", "),
            list.endorsers.len(),
            list.removed.len(),
            list.expires
        ));
    }
    if expired && !args.allow_expired {
        super::alert(format!(
            "vmic: error: VO {}'s list expired at {}",
            list.vo, list.expires
        ));
        return Ok(super::exit_code(Some(
            vmic_format::error::ErrorKind::Verification,
        )));
    }
    Ok(0)
}

pub fn run(args: Args, quiet: bool) -> Result<i32> {
    let out = Output {
        quiet,
        json: args.json,
    };
    if args.vo {
        return verify_vo(&args, out);
    }
    let engine = Engine::new(args.jobs.jobs)?;
    let [pubkey] = args.pubkey.as_slice() else {
        return Err(vmic_format::error::Error::input(
            "give one --pubkey for an endorser's catalog (several only with --vo)",
        ));
    };
    let key = load_public_key(pubkey)?;
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
