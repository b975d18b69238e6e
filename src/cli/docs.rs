//! `vmic completions SHELL` and `vmic man --out DIR`: shell completion
//! scripts and man pages, generated from the same clap definitions as
//! `--help`, so they cannot drift from the binary.

use std::path::PathBuf;

use vmic_format::error::{Error, Result};

/// Print the completion script for SHELL on stdout.
#[derive(clap::Args)]
pub struct CompletionArgs {
    /// bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

/// Write a man page for vmic and for every subcommand into DIR.
#[derive(clap::Args)]
pub struct ManArgs {
    /// Where the pages go (created if needed): vmic.1, vmic-sync.1,
    /// vmic-trust-add.1, …
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn completions(args: CompletionArgs) -> Result<i32> {
    let mut cmd = super::command_for_docs();
    clap_complete::generate(args.shell, &mut cmd, "vmic", &mut std::io::stdout());
    Ok(0)
}

pub fn man(args: ManArgs, out: super::Output) -> Result<i32> {
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io("create", &args.out, e))?;
    clap_mangen::generate_to(super::command_for_docs(), &args.out)
        .map_err(|e| Error::io("write man pages into", &args.out, e))?;
    let pages = std::fs::read_dir(&args.out)
        .map(|d| d.count())
        .unwrap_or_default();
    out.say(format!("{pages} man page(s) in {}", args.out.display()));
    Ok(0)
}
