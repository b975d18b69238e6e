//! `vmic audit DIR...`: classify every file of hypervisor image
//! directories against the site's images (approved, revoked, derived,
//! derived-from-rogue, unknown), and with `--quarantine DIR` move out what
//! may not stay. Exit 1 when anything is not approved or derived from an
//! approved image.

use std::path::PathBuf;

use vmic_engine::hashing::Engine;
use vmic_format::error::{Error, Result};
use vmic_site::scan::{Class, quarantine, scan};

use super::{JobsArg, Output};

#[derive(clap::Args)]
pub struct Args {
    /// Directories to scan (e.g. /var/lib/libvirt/images, a Glance or
    /// OpenNebula datastore), recursively; symbolic links are not followed.
    #[arg(required = true, value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Move rogue and revoked files here (same filesystem: a rename, never
    /// a half-moved file), with a log entry and a hook event each.
    #[arg(long, value_name = "DIR")]
    quarantine: Option<PathBuf>,
    #[command(flatten)]
    jobs: JobsArg,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, site: &Option<PathBuf>, quiet: bool) -> Result<i32> {
    let out = Output {
        quiet,
        json: args.json,
    };
    let engine = Engine::new(args.jobs.jobs)?;
    // Moving files writes the log: that needs the site's lock.
    let mut site = match args.quarantine {
        Some(_) => super::site::open(site)?,
        None => super::site::open_read_only(site)?,
    };
    let skip = match &args.quarantine {
        Some(q) => {
            std::fs::create_dir_all(q).map_err(|e| Error::io("create", q, e))?;
            Some(q.canonicalize().map_err(|e| Error::io("resolve", q, e))?)
        }
        None => None,
    };
    let progress = super::progress::for_terminal(out.show_progress(), "auditing");
    let mut report = scan(
        &site,
        (&args.dirs, skip.as_deref()),
        &engine,
        progress.as_ref(),
    )?;
    drop(progress);
    let failures = match &skip {
        Some(dir) => quarantine(&mut site, &mut report, dir)?,
        None => Vec::new(),
    };
    if let Some(w) = &report.warning {
        out.warn(w);
    }
    if args.json {
        super::print_json(&report);
    } else {
        print_text(&report, out);
    }
    for f in &failures {
        super::alert(format!("vmic: not quarantined: {f}"));
    }
    Ok(if report.clean() { 0 } else { 1 })
}

fn print_text(report: &vmic_site::scan::AuditReport, out: Output) {
    for e in &report.entries {
        let moved = e
            .quarantined_to
            .as_ref()
            .map(|q| format!(" -> quarantined as {q}"))
            .unwrap_or_default();
        let class = serde_json::to_value(e.class)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let line = format!("{class:18} {}  {}{moved}", e.path, e.reason);
        match e.class.acceptable() {
            true => out.say(line),
            false => super::alert(line),
        }
    }
    let bad = report
        .entries
        .iter()
        .filter(|e| !e.class.acceptable())
        .count();
    let approved = report
        .entries
        .iter()
        .filter(|e| matches!(e.class, Class::Approved | Class::Derived))
        .count();
    out.say(format!(
        "{} file(s): {approved} approved or derived, {bad} not; {} read ({} bytes), {} from the cache",
        report.files, report.hashed, report.bytes_hashed, report.cached
    ));
}
