//! `vmic site init`, and how every site command finds its site directory.

use std::path::PathBuf;

use vmic_format::error::Result;
use vmic_site::site::{Site, default_root};

use super::Output;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a site: site.toml, state.db, store/, quarantine/, tmp/.
    Init,
}

pub fn root(site: &Option<PathBuf>) -> Result<PathBuf> {
    match site {
        Some(dir) => Ok(dir.clone()),
        None => default_root(),
    }
}

/// The site, with its exclusive lock (commands that write).
pub fn open(site: &Option<PathBuf>) -> Result<Site> {
    Site::open(&root(site)?)
}

/// The site, read-only and without the lock (commands that only read).
pub fn open_read_only(site: &Option<PathBuf>) -> Result<Site> {
    Site::open_read_only(&root(site)?)
}

pub fn run(cmd: Command, site: &Option<PathBuf>, out: Output) -> Result<i32> {
    match cmd {
        Command::Init => {
            let root = root(site)?;
            let site = Site::init(&root)?;
            out.say(format!("initialised vmic site in {}", site.root.display()));
            out.say(format!(
                "edit {} to set policy and hooks",
                Site::config_path(&site.root).display()
            ));
            Ok(0)
        }
    }
}
