//! `vmic trust add|list|remove|edit|rekey`.

use std::path::PathBuf;

use vmic_format::error::Result;
use vmic_site::config::ApproveMode;
use vmic_site::trust::{self, CaFileChange, SerialMemory, TrustAdd, TrustEdit};

use super::Output;
use super::password::load_public_key;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Trust an endorser: its public key and where its catalog is published.
    Add {
        /// Short name for the endorser (letters, digits, . _ - +).
        name: String,
        /// The endorser's minisign public key file.
        #[arg(long, value_name = "FILE")]
        pubkey: PathBuf,
        /// http(s) URL, file:// URL or directory of the published catalog;
        /// repeat for mirrors, tried in order.
        #[arg(long, value_name = "SOURCE", required = true)]
        url: Vec<String>,
        /// Extra PEM CA certificates for this source.
        #[arg(long, value_name = "PEM")]
        ca_file: Option<PathBuf>,
        /// auto: import verified images at once; manual: wait for `vmic approve`.
        #[arg(long, value_name = "MODE")]
        approve: Option<String>,
        /// Keep its images this long after its catalog expired (an endorser
        /// on holiday), loudly; nothing new is imported meanwhile.
        #[arg(long, value_name = "DURATION")]
        grace: Option<String>,
    },
    /// List trusted endorsers.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop trusting an endorser; all its images are withdrawn (a VO that
    /// lists it does not bring it back until `trust accept`).
    Remove {
        /// The endorser's name at this site (see `vmic trust list`).
        name: String,
    },
    /// Trust an endorser a VO lists that waits for acceptance (VOs added
    /// with `--endorsers manual`, or one removed by `trust remove`).
    Accept {
        /// The endorser's name, as its VO lists it (see `vmic vo list`).
        name: String,
    },
    /// Trust another key for an endorser (compromise recovery): catalogs
    /// signed by the old key are refused from now on; decisions and images
    /// stay.
    Rekey {
        /// The endorser.
        name: String,
        /// Its new minisign public key file.
        #[arg(long, value_name = "FILE")]
        pubkey: PathBuf,
        /// Forget the highest serial seen (after a compromise, when the
        /// attacker may have signed a serial the real endorser cannot reach).
        #[arg(long)]
        reset_serial: bool,
    },
    /// Change an endorser's sources, CA file, approval mode or grace period, keeping its
    /// key, rollback memory, decisions and images.
    Edit(EditArgs),
}

/// `trust edit`.
#[derive(clap::Args)]
pub struct EditArgs {
    /// The endorser.
    name: String,
    /// New http(s) URL, file:// URL or directory of the published
    /// catalog; repeat for mirrors, tried in order (replaces them all).
    #[arg(long, value_name = "SOURCE")]
    url: Vec<String>,
    /// Extra PEM CA certificates for the source.
    #[arg(long, value_name = "PEM", conflicts_with = "no_ca_file")]
    ca_file: Option<PathBuf>,
    /// Use the system CA roots only.
    #[arg(long)]
    no_ca_file: bool,
    /// auto or manual, for images decided from now on.
    #[arg(long, value_name = "MODE")]
    approve: Option<String>,
    /// Keep its images this long after its catalog expired (0 for no
    /// grace), loudly; nothing new is imported meanwhile.
    #[arg(long, value_name = "DURATION")]
    grace: Option<String>,
}

pub fn run(cmd: Command, site_dir: &Option<PathBuf>, quiet: bool) -> Result<i32> {
    match cmd {
        Command::Add {
            name,
            pubkey,
            url,
            ca_file,
            approve,
            grace,
        } => {
            let out = Output { quiet, json: false };
            let mut site = super::site::open(site_dir)?;
            let pubkey = load_public_key(&pubkey)?;
            let grace_secs = grace.as_deref().map(parse_grace).transpose()?.unwrap_or(0);
            let approve = approve.as_deref().map(ApproveMode::parse).transpose()?;
            let row = trust::add(
                &mut site,
                TrustAdd {
                    name,
                    pubkey,
                    urls: url,
                    ca_file,
                    approve,
                    grace_secs,
                },
            )?;
            out.say(format!(
                "trusting {} (key {}) at {}, approval {}",
                row.name,
                row.key_id,
                row.url,
                row.approve.as_str()
            ));
        }
        Command::List { json } => return list(json, site_dir, quiet),
        Command::Rekey {
            name,
            pubkey,
            reset_serial,
        } => {
            let out = Output { quiet, json: false };
            let mut site = super::site::open(site_dir)?;
            let key = load_public_key(&pubkey)?;
            let memory = if reset_serial {
                SerialMemory::Reset
            } else {
                SerialMemory::Carry
            };
            let done = trust::rekey(&mut site, &name, key, memory)?;
            let serial = match done.carried_serial {
                Some(s) => format!("its catalogs must have a serial of at least {s}"),
                None => "no serial is remembered for it".to_string(),
            };
            out.say(format!(
                "{} now trusts key {} instead of {}; {serial}",
                done.name, done.new_key_id, done.old_key_id
            ));
        }
        Command::Edit(args) => edit(args, site_dir, quiet)?,
        Command::Accept { name } => {
            let out = Output { quiet, json: false };
            let mut site = super::site::open(site_dir)?;
            let row = vmic_site::vo::accept(&mut site, &name)?;
            out.say(format!(
                "trusting {} (key {}) at {}, approval {}",
                row.name,
                row.key_id,
                row.sources().collect::<Vec<_>>().join(", "),
                row.approve.as_str()
            ));
        }
        Command::Remove { name } => {
            let out = Output { quiet, json: false };
            let mut site = super::site::open(site_dir)?;
            let removal = trust::remove(&mut site, &name)?;
            out.say(format!(
                "{} is no longer trusted; {} image(s) withdrawn from the store, {} other(s) dropped",
                removal.name,
                removal.withdrawn.len(),
                removal.dropped.len()
            ));
            for w in removal.withdrawn {
                out.say(format!("withdrawn {w}"));
            }
            for d in removal.dropped {
                out.say(format!("dropped {d}"));
            }
        }
    }
    Ok(0)
}

/// `trust edit`: change sources, CA file, approval mode or grace period.
fn edit(args: EditArgs, site_dir: &Option<PathBuf>, quiet: bool) -> Result<()> {
    let EditArgs {
        name,
        url,
        ca_file,
        no_ca_file,
        approve,
        grace,
    } = args;
    let out = Output { quiet, json: false };
    let mut site = super::site::open(site_dir)?;
    let approve = approve.as_deref().map(ApproveMode::parse).transpose()?;
    let ca_file = match (ca_file, no_ca_file) {
        (Some(path), _) => CaFileChange::Set(path),
        (None, true) => CaFileChange::Clear,
        (None, false) => CaFileChange::Keep,
    };
    let row = trust::edit(
        &mut site,
        TrustEdit {
            name,
            urls: url,
            ca_file,
            approve,
            grace_secs: grace.as_deref().map(parse_grace).transpose()?,
        },
    )?;
    out.say(format!(
        "{} (key {}) now at {}, approval {}{}",
        row.name,
        row.key_id,
        row.url,
        row.approve.as_str(),
        row.ca_file
            .as_deref()
            .map(|ca| format!(", CA file {ca}"))
            .unwrap_or_default()
    ));
    Ok(())
}

/// A grace period: a duration, or 0 for none.
fn parse_grace(text: &str) -> Result<u64> {
    match text {
        "0" => Ok(0),
        _ => vmic_format::duration::parse_seconds(text),
    }
}

/// `trust list` only reads: no lock, works while a sync runs.
fn list(json: bool, site_dir: &Option<PathBuf>, quiet: bool) -> Result<i32> {
    let out = Output { quiet, json };
    let site = super::site::open_read_only(site_dir)?;
    let rows = trust::summaries(&site)?;
    if json {
        super::print_json(&rows);
    } else if rows.is_empty() {
        out.say("no trusted endorsers (add one with `vmic trust add`)");
    } else {
        for summary in rows {
            let history = match (&summary.serial, &summary.expires) {
                (Some(serial), Some(expires)) => format!(
                    "serial {serial} issued {} until {expires}",
                    summary.issued.as_deref().unwrap_or("?")
                ),
                _ => "no catalog accepted yet".to_string(),
            };
            let e = summary.row;
            let via = summary
                .vos
                .iter()
                .map(|v| format!("vo:{v}"))
                .chain(e.direct.then(|| "direct".to_string()))
                .collect::<Vec<_>>()
                .join(",");
            let status = match (&e.gone_since, &e.last_sync, &e.last_error) {
                _ if e.retired.is_some() => format!(
                    "RETIRED, images kept ({})",
                    e.retired.as_deref().unwrap_or_default()
                ),
                (Some(gone), _, _) => format!(
                    "GONE (catalog missing since {}, reported {gone})",
                    e.missing_since.as_deref().unwrap_or("?")
                ),
                (None, None, _) => "never synced".to_string(),
                (None, Some(t), None) => format!("last sync {t} ok"),
                (None, Some(t), Some(err)) => format!(
                    "last sync {t} FAILED: {err} (last success {})",
                    e.last_success.as_deref().unwrap_or("never")
                ),
            };
            out.say(format!(
                "{}  key {}  {}  approve={}  via={via}  {history}  {status}",
                e.name,
                e.key_id,
                e.sources().collect::<Vec<_>>().join(" "),
                e.approve.as_str()
            ));
        }
    }
    Ok(0)
}
