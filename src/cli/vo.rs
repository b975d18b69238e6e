//! `vmic vo build|sign` (VO managers) and `vmic vo add|list|remove` (sites).

use std::path::PathBuf;

use vmic_endorser::vo::{VoBuildOptions, VoReport, build_vo, cosign_vo};
use vmic_format::error::Result;
use vmic_site::config::ApproveMode;
use vmic_site::vo::{self, VoAdd};

use super::Output;
use super::password::{PasswordArgs, load_public_key, load_secret_key};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Compile VO.toml into a signed vo.json (next serial, chained to the
    /// list already in OUT_DIR).
    Build {
        /// The VO description.
        toml: PathBuf,
        /// A VO manager's secret key.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Where vo.json, its signatures and index.html go.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        password: PasswordArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add another manager's co-signature (vo.json.<KEYID>.minisig) to the
    /// list in OUT_DIR.
    Sign {
        /// The VO publication directory.
        out_dir: PathBuf,
        /// This manager's secret key.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        #[command(flatten)]
        password: PasswordArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Support a VO: its managers' keys, how many must sign, where its list is.
    Add {
        /// The VO's name, as its list names it.
        name: String,
        /// A VO manager's minisign public key file; repeat for each.
        #[arg(long, value_name = "FILE", required = true)]
        pubkey: Vec<PathBuf>,
        /// Signatures by distinct keys a list needs (default 1).
        #[arg(long, value_name = "K")]
        threshold: Option<u32>,
        /// http(s) URL, file:// URL or directory of the list; repeat for
        /// mirrors, tried in order.
        #[arg(long, value_name = "SOURCE", required = true)]
        url: Vec<String>,
        /// Extra PEM CA certificates for those sources.
        #[arg(long, value_name = "PEM")]
        ca_file: Option<PathBuf>,
        /// auto: trust the endorsers it lists at once; manual: they wait for
        /// `vmic trust accept`.
        #[arg(long, value_name = "MODE", default_value = "auto")]
        endorsers: String,
    },
    /// List supported VOs and what their lists say.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop supporting a VO: endorsers trusted only through it are removed
    /// and their images withdrawn.
    Remove {
        /// The VO's name (see `vmic vo list`).
        name: String,
    },
}

pub fn run(cmd: Command, site_dir: &Option<PathBuf>, quiet: bool) -> Result<i32> {
    let out = Output { quiet, json: false };
    match cmd {
        Command::Build {
            toml,
            key,
            out: out_dir,
            password,
            json,
        } => {
            let key = load_secret_key(&key, &password)?;
            let report = build_vo(&VoBuildOptions {
                toml,
                key: &key,
                out_dir,
                now: None,
            })?;
            print_report("built", &report, json, out);
        }
        Command::Sign {
            out_dir,
            key,
            password,
            json,
        } => {
            let key = load_secret_key(&key, &password)?;
            let report = cosign_vo(&out_dir, &key)?;
            print_report("co-signed", &report, json, out);
        }
        Command::Add {
            name,
            pubkey,
            threshold,
            url,
            ca_file,
            endorsers,
        } => {
            let mut site = super::site::open(site_dir)?;
            let pubkeys = pubkey
                .iter()
                .map(|p| load_public_key(p))
                .collect::<Result<Vec<_>>>()?;
            let row = vo::add(
                &mut site,
                VoAdd {
                    name,
                    pubkeys,
                    threshold,
                    urls: url,
                    ca_file,
                    endorsers: ApproveMode::parse(&endorsers)?,
                },
            )?;
            out.say(format!(
                "supporting VO {}: {} of {} manager key(s) must sign its list at {}; endorsers {}",
                row.name,
                row.threshold,
                row.pubkeys.len(),
                row.urls.join(", "),
                row.endorsers.as_str()
            ));
        }
        Command::List { json } => return list(json, site_dir, quiet),
        Command::Remove { name } => {
            let mut site = super::site::open(site_dir)?;
            let removal = vo::remove(&mut site, &name)?;
            out.say(format!(
                "VO {} is no longer supported; {} endorser(s) removed ({}), {} still trusted otherwise",
                removal.name,
                removal.removed.len(),
                removal.removed.join(", "),
                removal.kept.len()
            ));
        }
    }
    Ok(0)
}

fn print_report(what: &str, report: &VoReport, json: bool, out: Output) {
    if json {
        super::print_json(report);
    } else {
        out.say(format!(
            "{what} VO {} list serial {} ({} endorser(s), {} removed), valid until {}; wrote {}",
            report.vo,
            report.serial,
            report.endorsers,
            report.removed,
            report.expires,
            report.signature
        ));
    }
}

/// `vo list` only reads.
fn list(json: bool, site_dir: &Option<PathBuf>, quiet: bool) -> Result<i32> {
    let out = Output { quiet, json };
    let site = super::site::open_read_only(site_dir)?;
    let rows = vo::summaries(&site)?;
    if json {
        super::print_json(&rows);
        return Ok(0);
    }
    if rows.is_empty() {
        out.say("no supported VOs (add one with `vmic vo add`)");
    }
    for summary in rows {
        let v = &summary.row;
        let history = match (&summary.serial, &summary.expires) {
            (Some(serial), Some(expires)) => format!("list serial {serial} until {expires}"),
            _ => "no list accepted yet".to_string(),
        };
        let status = match (&v.last_sync, &v.last_error) {
            (None, _) => "never synced".to_string(),
            (Some(t), None) => format!("last sync {t} ok"),
            (Some(t), Some(err)) => format!("last sync {t} FAILED: {err}"),
        };
        out.say(format!(
            "{}  {} of {} keys  {}  endorsers={}  {history}  {status}",
            v.name,
            v.threshold,
            v.pubkeys.len(),
            v.urls.join(" "),
            v.endorsers.as_str()
        ));
        for m in &summary.members {
            out.say(format!(
                "  {}  {}  since {}",
                m.name,
                m.status_text(),
                m.since
            ));
        }
    }
    Ok(0)
}
