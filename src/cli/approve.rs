//! `vmic approve` and `vmic reject`: the site's manual approval step.

use std::path::PathBuf;

use vmic_format::error::Result;
use vmic_site::review;

use super::Output;

#[derive(clap::Args)]
pub struct Args {
    /// ID or ID@VERSION.
    image: String,
    /// Only images of this endorser.
    #[arg(long, value_name = "NAME")]
    endorser: Option<String>,
}

pub fn run(args: Args, approve: bool, site: &Option<PathBuf>, quiet: bool) -> Result<i32> {
    let out = Output { quiet, json: false };
    let mut site = super::site::open(site)?;
    let endorser = args.endorser.as_deref();
    if approve {
        for label in review::approve(&mut site, &args.image, endorser)? {
            out.say(format!("approved {label}; the next sync imports it"));
        }
    } else {
        for label in review::reject(&mut site, &args.image, endorser)? {
            out.say(format!("rejected {label}"));
        }
    }
    Ok(0)
}
