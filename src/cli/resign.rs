//! `vmic resign`: a new serial and expiry for an unchanged publication.

use std::path::PathBuf;

use vmic_endorser::resign::{ResignOptions, resign};
use vmic_format::error::Result;

use super::Output;
use super::password::{PasswordArgs, load_secret_key};

/// Re-sign OUT_DIR's catalog with a new serial and expiry, without
/// re-hashing (the current catalog must verify with this key).
#[derive(clap::Args)]
pub struct Args {
    /// The publication (a `vmic build` output directory).
    out_dir: PathBuf,
    /// Secret key (the one that signed the current catalog).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Validity from now, e.g. 12h, 30d.
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    expires: String,
    #[command(flatten)]
    state_dir: super::StateDirArg,
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
    let expires_secs = vmic_format::duration::parse_seconds(&args.expires)?;
    let key = load_secret_key(&args.key, &args.password)?;
    let report = resign(&ResignOptions {
        out_dir: args.out_dir,
        key: &key,
        expires_secs,
        state_root: args.state_dir.root()?,
        now: None,
    })?;
    if args.json {
        super::print_json(&report);
    } else {
        out.say(format!(
            "re-signed {} (key {}): serial {} -> {}, {} image(s), valid from {} until {}",
            report.out_dir,
            report.key_id,
            report.previous_serial,
            report.serial,
            report.images,
            report.issued,
            report.expires
        ));
    }
    Ok(0)
}
