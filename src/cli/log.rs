//! `vmic log`: the append-only audit trail.

use std::path::PathBuf;

use vmic_format::error::Result;

use super::Output;

pub fn run(json: bool, site: &Option<PathBuf>, quiet: bool) -> Result<i32> {
    let out = Output { quiet, json };
    let site = super::site::open_read_only(site)?;
    let rows = site.state.audit()?;
    if json {
        super::print_json(&rows);
        return Ok(0);
    }
    for r in rows {
        let who = [r.endorser.as_deref(), r.image.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        out.say(format!("{} {:16} {who}  {}", r.at, r.action, r.detail));
    }
    Ok(0)
}
