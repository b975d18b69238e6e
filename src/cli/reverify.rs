//! `vmic reverify`: re-hash the store against the signed digests.

use std::path::PathBuf;

use vmic_engine::hashing::Engine;
use vmic_format::error::Result;

use super::Output;

pub fn run(json: bool, jobs: Option<usize>, site: &Option<PathBuf>, quiet: bool) -> Result<i32> {
    let out = Output { quiet, json };
    let engine = Engine::new(jobs)?;
    let mut site = super::site::open(site)?;
    let progress = super::progress::for_terminal(out.show_progress(), "reverifying");
    let report = vmic_site::review::reverify(&mut site, &engine, progress.as_ref())?;
    drop(progress);
    if json {
        super::print_json(&report);
    } else {
        for q in &report.quarantined {
            super::alert(format!("vmic: QUARANTINED {q}"));
        }
        for u in &report.unchecked {
            super::alert(format!("vmic: NOT CHECKED {u}"));
        }
        out.say(format!(
            "{} imported image(s) checked, {} ok, {} quarantined, {} not checked",
            report.checked,
            report.ok.len(),
            report.quarantined.len(),
            report.unchecked.len()
        ));
    }
    Ok(
        match (report.quarantined.is_empty(), report.unchecked.is_empty()) {
            (false, _) => 1,
            (true, false) => 3,
            (true, true) => 0,
        },
    )
}
