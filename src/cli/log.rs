//! `vmic log`: the audit trail, filtered, and checked as evidence
//! (`--verify`: every entry chained by hash to the one before).

use std::path::PathBuf;

use vmic_format::error::{Error, Result};
use vmic_site::state::{AuditRow, Head, LogFilter};

use super::Output;

#[derive(clap::Args)]
pub struct Args {
    /// Only entries at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<jiff::Timestamp>,
    /// Only entries before this time.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<jiff::Timestamp>,
    /// Only entries of this action (`imported`, `quarantined`, `withdrawn`, …).
    #[arg(long, value_name = "ACTION")]
    event: Option<String>,
    /// Only entries about this endorser.
    #[arg(long, value_name = "NAME")]
    endorser: Option<String>,
    /// Only entries about this image (ID or ID@VERSION).
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
    /// Check the whole log: every entry chained to the one before, none
    /// missing, altered or moved, the newest as recorded (exit 1 if not).
    #[arg(long)]
    verify: bool,
    /// With --verify: a head recorded elsewhere (`vmic log --head` printed
    /// it), which must still be in the log unchanged.
    #[arg(long, value_name = "SEQ:HASH", value_parser = parse_head, requires = "verify")]
    anchor: Vec<Head>,
    /// Print the newest entry's SEQ:HASH, to keep somewhere else (a remote
    /// log, a ticket) for `--verify --anchor`.
    #[arg(long, conflicts_with = "verify")]
    head: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn parse_time(text: &str) -> std::result::Result<jiff::Timestamp, String> {
    text.parse()
        .map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))
}

fn parse_head(text: &str) -> std::result::Result<Head, String> {
    Head::parse(text)
        .ok_or_else(|| format!("{text:?} is not SEQ:SHA256 (as `vmic log --head` prints)"))
}

pub fn run(args: Args, site: &Option<PathBuf>, quiet: bool) -> Result<i32> {
    let out = Output {
        quiet,
        json: args.json,
    };
    let site = super::site::open_read_only(site)?;
    if args.verify {
        return verify(&site, &args, out);
    }
    if args.head {
        let check = site.state.verify_log(&[])?;
        let head = check
            .head
            .ok_or_else(|| Error::input("the log has no chained entry yet"))?;
        match args.json {
            true => super::print_json(&head),
            false => println!("{head}"),
        }
        return Ok(0);
    }
    let filter = LogFilter {
        since: args.since,
        until: args.until,
        event: args.event.clone(),
        endorser: args.endorser.clone(),
        image: args.image.clone(),
    };
    let rows: Vec<AuditRow> = site
        .state
        .audit()?
        .into_iter()
        .filter(|r| filter.keeps(r))
        .collect();
    if args.json {
        super::print_json(&rows);
        return Ok(0);
    }
    for r in rows {
        let about = [r.endorser.as_deref(), r.image.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        let by = if r.actor.is_empty() {
            String::new()
        } else {
            format!("  [{}: {}]", r.actor, r.command)
        };
        out.say(format!(
            "{} {:16} {about}  {}{by}",
            r.at, r.action, r.detail
        ));
    }
    Ok(0)
}

fn verify(site: &vmic_site::Site, args: &Args, out: Output) -> Result<i32> {
    let mut anchors: Vec<(String, Head)> = Vec::new();
    if let Some(kept) = site.state.kept_head() {
        anchors.push((site.root.join("audit.head").display().to_string(), kept));
    }
    anchors.extend(
        args.anchor
            .iter()
            .map(|a| ("--anchor".to_string(), a.clone())),
    );
    let check = site.state.verify_log(&anchors)?;
    if args.json {
        super::print_json(&check);
    } else {
        for problem in &check.problems {
            super::alert(format!("vmic: LOG TAMPERED: {problem}"));
        }
        let head = check
            .head
            .as_ref()
            .map_or_else(|| "none".to_string(), ToString::to_string);
        out.say(format!(
            "{} entries, {} chained, {} from before the chain; head {head}; {}",
            check.entries,
            check.entries - check.unchained,
            check.unchained,
            if check.problems.is_empty() {
                "intact"
            } else {
                "TAMPERED"
            }
        ));
    }
    Ok(if check.problems.is_empty() { 0 } else { 1 })
}
