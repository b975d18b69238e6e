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
    let mut site = Site::open(&root(site)?)?;
    site.state.set_actor(vmic_site::state::Actor {
        user: vmic_site::state::current_user(),
        command: command_line(),
    });
    Ok(site)
}

/// The command as run, for the audit log: `vmic` and its arguments, each
/// quoted when it holds anything but plain characters.
fn command_line() -> String {
    let plain = |a: &str| {
        !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c))
    };
    std::iter::once("vmic".to_string())
        .chain(std::env::args().skip(1).map(|a| match plain(&a) {
            true => a,
            false => format!("{a:?}"),
        }))
        .collect::<Vec<_>>()
        .join(" ")
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
