//! `vmic key rotate`: move a publication to a new signing key.

use std::path::PathBuf;

use vmic_endorser::rotate::{RotateOptions, rotate};
use vmic_format::error::Result;

use super::Output;
use super::password::{PasswordArgs, load_secret_key};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Write a rotation statement into OUT_DIR, signed by the old key and
    /// the new one; sites pinned to the old key follow it at their next
    /// sync. Build with the new key from now on (the old one is refused).
    Rotate {
        /// The key that signs the publication now.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The key that signs it from now on (make it with `vmic keygen`).
        #[arg(long, value_name = "FILE")]
        new_key: PathBuf,
        /// The publication (a `vmic build` output directory).
        #[arg(long, value_name = "OUT_DIR")]
        out: PathBuf,
        #[command(flatten)]
        state_dir: super::StateDirArg,
        /// Password source for both keys (a terminal prompts for each).
        #[command(flatten)]
        password: PasswordArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: Command, quiet: bool) -> Result<i32> {
    let Command::Rotate {
        key,
        new_key,
        out,
        state_dir,
        password,
        json,
    } = cmd;
    let output = Output { quiet, json };
    let old = load_secret_key(&key, &password)?;
    let new = load_secret_key(&new_key, &password)?;
    let report = rotate(&RotateOptions {
        out_dir: out,
        old: &old,
        new: &new,
        state_root: state_dir.root()?,
    })?;
    if json {
        super::print_json(&report);
    } else {
        output.say(format!(
            "key {} rotated to {} ({}); build with the new key from now on",
            report.from, report.to, report.statement
        ));
    }
    Ok(0)
}
