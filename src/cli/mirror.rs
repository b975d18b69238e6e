//! `vmic mirror`: a verified, incremental copy of a publication.

use std::path::PathBuf;

use vmic_endorser::mirror::{MirrorOptions, MirrorReport, mirror, mirror_vo};
use vmic_engine::fetch::{HttpClient, HttpConfig};
use vmic_engine::hashing::Engine;
use vmic_engine::publication::Publication;
use vmic_format::error::Result;
use vmic_format::limits::DEFAULT_MAX_CATALOG_BYTES;

use super::password::load_public_key;
use super::{JobsArg, Output};

/// Copy a publication into DEST, verifying the signature and every chunk
/// before anything becomes visible there; only what changed is fetched.
#[derive(clap::Args)]
pub struct Args {
    /// http(s) URL, file:// URL or directory of the publication.
    source: String,
    /// The directory to serve the copy from.
    dest: PathBuf,
    /// The endorser's minisign public key (with --vo: a VO manager's key;
    /// repeat for each).
    #[arg(long, value_name = "FILE", required = true)]
    pubkey: Vec<PathBuf>,
    /// SOURCE is a VO list (vo.json), not an endorser's publication.
    #[arg(long)]
    vo: bool,
    /// With --vo: signatures by distinct keys the list needs.
    #[arg(long, value_name = "K", default_value_t = 1, requires = "vo")]
    threshold: u32,
    #[command(flatten)]
    jobs: JobsArg,
    /// Refuse catalogs larger than this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_CATALOG_BYTES)]
    max_catalog_size: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, quiet: bool) -> Result<i32> {
    let out = Output {
        quiet,
        json: args.json,
    };
    let engine = Engine::new(args.jobs.jobs)?;
    let keys = args
        .pubkey
        .iter()
        .map(|p| load_public_key(p))
        .collect::<Result<Vec<_>>>()?;
    let client = HttpClient::new(&HttpConfig::default())?;
    if args.vo {
        let source = vmic_engine::vo_source::open_vo_source(&args.source, &client)?;
        let report = mirror_vo(&*source, &args.dest, (&keys, args.threshold))?;
        print_report(&report, out);
        return Ok(0);
    }
    let [key] = keys.as_slice() else {
        return Err(vmic_format::error::Error::input(
            "give one --pubkey for an endorser's publication (several only with --vo)",
        ));
    };
    let source = Publication::open(&args.source, &client)?;
    let progress = super::progress::for_terminal(out.show_progress(), "mirroring");
    let opts = MirrorOptions {
        key,
        dest: args.dest,
        max_catalog_bytes: args.max_catalog_size,
    };
    let report = mirror(&source, &opts, &engine, progress.as_ref())?;
    drop(progress);
    print_report(&report, out);
    Ok(0)
}

fn print_report(report: &MirrorReport, out: Output) {
    if out.json {
        super::print_json(report);
    } else {
        out.say(format!(
            "{} -> {}: serial {}{}, {} image(s) copied ({} bytes), {} kept, {} file(s) pruned",
            report.source,
            report.dest,
            report.serial,
            if report.unchanged { " (unchanged)" } else { "" },
            report.copied.len(),
            report.bytes_copied,
            report.kept,
            report.pruned.len()
        ));
    }
}
