//! `vmic bundle`: what an air-gapped site needs, in one directory.

use std::path::PathBuf;

use vmic_format::error::Result;
use vmic_site::bundle::write_bundle;

use super::Output;

/// Write the catalogs this site accepted (exactly as signed) and the
/// images it imported into DIR, for `vmic sync --from DIR` at a site with
/// no network.
#[derive(clap::Args)]
pub struct Args {
    /// Endorsers to include (default: every trusted endorser).
    names: Vec<String>,
    /// The bundle directory.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, site_dir: &Option<PathBuf>, quiet: bool) -> Result<i32> {
    let out = Output {
        quiet,
        json: args.json,
    };
    let site = super::site::open_read_only(site_dir)?;
    let report = write_bundle(&site, &args.names, &args.out)?;
    if args.json {
        super::print_json(&report);
    } else {
        for e in &report.endorsers {
            out.say(format!(
                "{}: catalog serial {}, {} image(s)",
                e.name, e.serial, e.images
            ));
        }
        out.say(format!(
            "bundle written to {} ({} endorser(s), {} bytes of images); carry it over and run `vmic sync --from DIR`",
            report.out,
            report.endorsers.len(),
            report.image_bytes
        ));
    }
    Ok(0)
}
