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
    /// Approve even an image the site's deny rules reject (recorded in the
    /// log with the rule it overrules). Only for `approve`.
    #[arg(long = "override")]
    override_deny: bool,
}

pub fn run(args: Args, approve: bool, site: &Option<PathBuf>, quiet: bool) -> Result<i32> {
    let out = Output { quiet, json: false };
    if args.override_deny && !approve {
        return Err(vmic_format::error::Error::input(
            "--override is for `vmic approve` (a rejection needs no override)",
        ));
    }
    let mut site = super::site::open(site)?;
    let endorser = args.endorser.as_deref();
    let (review, done, already) = if approve {
        (
            review::approve_as(
                &mut site,
                &args.image,
                endorser,
                if args.override_deny {
                    review::DenyRules::Override
                } else {
                    review::DenyRules::Respect
                },
            )?,
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
