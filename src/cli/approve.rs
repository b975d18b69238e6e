//! `vmic approve` and `vmic reject`: the site's manual approval step.

use std::path::PathBuf;

use vmic_format::error::Result;
use vmic_site::review;

use super::Output;

#[derive(clap::Args)]
pub struct Args {
    /// [ENDORSER/]ID[@VERSION]; an id that several endorsers publish needs the endorser.
    image: String,
    /// Only images of this endorser.
    #[arg(long, value_name = "NAME")]
    endorser: Option<String>,
}

pub fn run(args: Args, approve: bool, site: &Option<PathBuf>, quiet: bool) -> Result<i32> {
    let out = Output { quiet, json: false };
    let mut site = super::site::open(site)?;
    let endorser = args.endorser.as_deref();
    let (review, done, already) = if approve {
        (
            review::approve(&mut site, &args.image, endorser)?,
            "approved",
            "approved or imported",
        )
    } else {
        (
            review::reject(&mut site, &args.image, endorser)?,
            "rejected",
            "rejected",
        )
    };
    for label in &review.changed {
        let next = if approve {
            "; the next sync imports it"
        } else {
            ""
        };
        out.say(format!("{done} {label}{next}"));
    }
    for label in &review.unchanged {
        out.say(format!("{label} is already {already}; nothing to do"));
    }
    Ok(0)
}
