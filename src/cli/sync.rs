//! `vmic sync`: poll trusted endorsers, import verified approved images,
//! withdraw what is revoked.

use std::path::PathBuf;

use vmic_engine::hashing::Engine;
use vmic_format::error::Result;
use vmic_site::plan::Action;
use vmic_site::sync::{SyncOptions, SyncReport, sync};

use super::{JobsArg, Output};

/// Fetch, verify and apply the catalogs of trusted endorsers.
#[derive(clap::Args)]
pub struct Args {
    /// Endorsers to sync (default: all).
    names: Vec<String>,
    /// Show what would change, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Use expired catalogs (loudly); older serials are still refused.
    #[arg(long)]
    allow_expired: bool,
    /// Read every endorser from this bundle (`vmic bundle`) instead of its
    /// sources, matched by key; the same checks as a network sync.
    #[arg(long, value_name = "DIR")]
    from: Option<PathBuf>,
    #[command(flatten)]
    jobs: JobsArg,
    /// Print the whole report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, site: &Option<PathBuf>, quiet: bool) -> Result<i32> {
    let out = Output {
        quiet,
        json: args.json,
    };
    stop_on_signals();
    let engine = Engine::new(args.jobs.jobs)?;
    let mut site = super::site::open(site)?;
    let opts = SyncOptions {
        endorsers: args.names,
        dry_run: args.dry_run,
        allow_expired: args.allow_expired,
        now: None,
        from: args.from,
    };
    let progress = super::progress::for_terminal(out.show_progress(), "fetching");
    let report = sync(&mut site, &opts, &engine, progress.as_ref())?;
    drop(progress);
    let exit_code = super::exit_code(report.failure());
    if args.json {
        super::print_json(&with_exit_codes(&report, exit_code));
        return Ok(exit_code);
    }
    for note in &report.reconciled {
        out.warn(note);
    }
    for v in &report.vos {
        print_vo(v, out);
    }
    for e in &report.endorsers {
        for w in &e.warnings {
            out.warn(format!("{}: {w}", e.name));
        }
        let serial = e.serial.map(|s| format!(" serial {s}")).unwrap_or_default();
        if report.dry_run {
            out.say(format!("{}{serial}: plan", e.name));
            for p in &e.plan {
                let sign = match p.action {
                    Action::Import => "+",
                    Action::Withdraw => "-",
                    Action::Keep => "=",
                    Action::Pending | Action::Reject => "?",
                };
                out.say(format!(
                    "  {sign} {:8} {} ({} bytes): {}",
                    action_name(p.action),
                    p.image,
                    p.size,
                    p.reason
                ));
            }
        }
        for i in &e.imported {
            out.say(format!("{}: imported {i}", e.name));
        }
        let pending: Vec<&str> = e
            .plan
            .iter()
            .filter(|p| p.action == Action::Pending)
            .map(|p| p.image.as_str())
            .collect();
        if !pending.is_empty() && !report.dry_run {
            out.say(format!(
                "{}: {} image(s) wait for `vmic approve`: {}",
                e.name,
                pending.len(),
                pending.join(", ")
            ));
        }
        for w in &e.withdrawn {
            out.say(format!("{}: withdrawn {w}", e.name));
        }
        for r in &e.rewritten {
            super::alert(format!("vmic: {}: REWRITTEN {r}", e.name));
        }
        for q in &e.quarantined {
            super::alert(format!("vmic: {}: QUARANTINED {q}", e.name));
        }
        for d in &e.deferred {
            out.warn(format!("{}: not fetched: {d}", e.name));
        }
        for f in &e.failed {
            super::alert(format!(
                "vmic: {}: fetch failed (will resume next time): {f}",
                e.name
            ));
        }
        match &e.error {
            Some(err) => super::alert(format!("vmic: error: {err}")),
            None => out.say(format!("{}{serial}: ok", e.name)),
        }
    }
    for err in &report.hooks.errors {
        out.warn(format!("hook failed (will be re-sent next sync): {err}"));
    }
    Ok(exit_code)
}

fn print_vo(v: &vmic_site::vo::VoReport, out: Output) {
    for w in &v.warnings {
        out.warn(w);
    }
    for c in &v.changes {
        out.say(format!("VO {}: {c}", v.name));
    }
    if !v.pending.is_empty() {
        out.say(format!(
            "VO {}: {} endorser(s) wait for `vmic trust accept`: {}",
            v.name,
            v.pending.len(),
            v.pending.join(", ")
        ));
    }
    let serial = v
        .serial
        .map(|s| format!(" list serial {s}"))
        .unwrap_or_default();
    match &v.error {
        Some(err) => super::alert(format!("vmic: error: {err}")),
        None => out.say(format!("VO {}{serial}: ok", v.name)),
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Import => "import",
        Action::Pending => "pending",
        Action::Reject => "reject",
        Action::Withdraw => "withdraw",
        Action::Keep => "keep",
    }
}

/// The report as JSON with the exit codes the binary decided: the whole
/// run's, and each endorser's.
fn with_exit_codes(report: &SyncReport, exit_code: i32) -> serde_json::Value {
    let mut value = serde_json::to_value(report).unwrap_or_default();
    value["exit_code"] = exit_code.into();
    let endorsers = value["endorsers"].as_array_mut();
    for (json, endorser) in endorsers.into_iter().flatten().zip(&report.endorsers) {
        json["exit_code"] = super::exit_code(endorser.failure).into();
    }
    let vos = value["vos"].as_array_mut();
    for (json, vo) in vos.into_iter().flatten().zip(&report.vos) {
        json["exit_code"] = super::exit_code(vo.failure).into();
    }
    value
}

/// SIGTERM, SIGINT and SIGHUP ask the sync to stop the way a failed
/// download stops (what arrived is kept, the lock released, exit 3),
/// instead of killing it mid-write. A second signal kills as usual.
fn stop_on_signals() {
    extern "C" fn on_stop(signal: libc::c_int) {
        vmic_engine::cancel::request(signal);
    }
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is valid (empty mask, no flags); the
        // handler only does an atomic store, which is async-signal-safe.
        // No SA_RESTART: a blocked read returns EINTR and sees the request.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}
