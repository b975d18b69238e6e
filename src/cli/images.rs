//! `vmic images`: every image the site knows, with its state and why.

use std::path::PathBuf;

use vmic_format::error::Result;
use vmic_site::state::ImageSummary;

use super::Output;

pub fn run(json: bool, site: &Option<PathBuf>, quiet: bool) -> Result<i32> {
    let out = Output { quiet, json };
    let site = super::site::open_read_only(site)?;
    let rows = site.state.images()?;
    if json {
        let summaries: Vec<ImageSummary> = rows.iter().map(ImageSummary::from).collect();
        super::print_json(&summaries);
        return Ok(0);
    }
    if rows.is_empty() {
        out.say("no images known yet (run `vmic sync`)");
    }
    for r in rows {
        let path = r
            .store_path
            .as_ref()
            .map(|p| format!("  store/{p}"))
            .unwrap_or_default();
        out.say(format!(
            "{:11} {}/{}@{}  {} bytes  {}{path}",
            r.state, r.endorser, r.id, r.version, r.size, r.reason
        ));
    }
    Ok(0)
}
