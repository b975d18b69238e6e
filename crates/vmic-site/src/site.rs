//! A site's directory: configuration, state database, store, quarantine and
//! temporary space, all on one filesystem so moves into the store are renames.
//!
//! ```text
//! SITE/
//!   site.toml          configuration (policy, hooks, http)
//!   state.db           SQLite state (endorsers, serials, images, audit, outbox)
//!   store/ENDORSER/ID@VERSION.FORMAT      verified images only
//!   quarantine/ENDORSER/ID@VERSION.TIME   bytes that failed verification
//!   tmp/ENDORSER/ID@VERSION.part          downloads in progress (resumable)
//!   .lock              exclusive lock held by every command that writes
//!                      (read-only commands take none: SQLite WAL snapshots)
//! ```

use std::path::{Path, PathBuf};

use crate::config::{DEFAULT_SITE_TOML, SiteConfig};
use crate::error::{Error, Result};
use crate::fsutil::{DirLock, atomic_write};
use crate::state::State;

/// The environment variable that names the site directory.
pub const SITE_ENV: &str = "VMIC_SITE";

/// An open site: its directory, configuration and state.
pub struct Site {
    /// The site directory, canonical.
    pub root: PathBuf,
    /// `site.toml`.
    pub config: SiteConfig,
    /// `state.db`.
    pub state: State,
    /// Held by every command that writes; `None` for a read-only view.
    _lock: Option<DirLock>,
}

/// The default site directory: `$XDG_DATA_HOME/vmic/site`, else
/// `~/.local/share/vmic/site`.
pub fn default_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("vmic/site"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            Error::input(format!(
                "no site directory: give --site DIR or set {SITE_ENV}"
            ))
        })?;
    Ok(PathBuf::from(home).join(".local/share/vmic/site"))
}

impl Site {
    /// `site.toml` under `root`.
    pub fn config_path(root: &Path) -> PathBuf {
        root.join("site.toml")
    }

    /// `store/`: verified images only.
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }

    /// `quarantine/`: bytes that failed verification.
    pub fn quarantine(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    /// `tmp/`: downloads in progress.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Create a new site. Refuses to touch an existing one.
    pub fn init(root: &Path) -> Result<Site> {
        if Site::config_path(root).exists() || root.join("state.db").exists() {
            return Err(Error::input(format!(
                "{} is already a vmic site",
                root.display()
            )));
        }
        std::fs::create_dir_all(root).map_err(|e| Error::io("create site directory", root, e))?;
        let lock = DirLock::acquire(root, ".lock", "command")?;
        for sub in ["store", "quarantine", "tmp"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        }
        State::open(&root.join("state.db"), true)?;
        atomic_write(&Site::config_path(root), DEFAULT_SITE_TOML.as_bytes())?;
        drop(lock);
        Site::open(root)
    }

    /// Open an existing site, taking its exclusive lock.
    pub fn open(root: &Path) -> Result<Site> {
        require_site(root)?;
        let lock = DirLock::acquire(root, ".lock", "command")?;
        let state = State::open(&root.join("state.db"), false)?;
        Site::assemble(root, state, Some(lock))
    }

    /// Open an existing site for reading only (`images`, `log`, `trust
    /// list`): no lock, so it works while a sync runs and for a user who may
    /// read the site but not write it.
    pub fn open_read_only(root: &Path) -> Result<Site> {
        require_site(root)?;
        let state = State::open_read_only(&root.join("state.db"))?;
        Site::assemble(root, state, None)
    }

    fn assemble(root: &Path, state: State, lock: Option<DirLock>) -> Result<Site> {
        let config = SiteConfig::load(&Site::config_path(root))?;
        let root = root
            .canonicalize()
            .map_err(|e| Error::io("resolve", root, e))?;
        Ok(Site {
            root,
            config,
            state,
            _lock: lock,
        })
    }
}

fn require_site(root: &Path) -> Result<()> {
    if Site::config_path(root).exists() {
        return Ok(());
    }
    Err(Error::input(format!(
        "{} is not a vmic site (no site.toml); run `vmic site init` first",
        root.display()
    )))
}
