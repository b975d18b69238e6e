//! Event hooks in the vmcatcher tradition: one command run per event
//! (import, revoke, expire, quarantine, reject) with the image's metadata in
//! `VMIC_*` environment variables.
//!
//! Events are queued in the database outbox in the same transaction as the
//! state change they describe, and removed only after the hook succeeded: a
//! failed or timed-out hook (or a crash) means the event is re-sent by the
//! next sync, never silently lost.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::Result;
use crate::site::Site;

/// What running the outbox achieved.
#[derive(Debug, Default, Serialize)]
pub struct HookSummary {
    /// Events whose hook succeeded.
    pub delivered: usize,
    /// Events whose hook failed (kept for the next sync).
    pub failed: usize,
    /// What failed.
    pub errors: Vec<String>,
}

/// Run every queued event through the hook command, oldest first.
pub fn flush_outbox(site: &mut Site) -> Result<HookSummary> {
    let mut summary = HookSummary::default();
    let command = site.config.hooks.command.clone();
    let timeout = site.config.hook_timeout();
    for entry in site.state.outbox()? {
        let Some(command) = &command else {
            site.state
                .outbox_done(entry.seq, &entry.event, "no hook command configured")?;
            continue;
        };
        match run_hook(command, &entry.env, timeout) {
            Ok(detail) => {
                site.state.outbox_done(entry.seq, &entry.event, &detail)?;
                summary.delivered += 1;
            }
            Err(error) => {
                site.state.outbox_failed(entry.seq, &entry.event, &error)?;
                summary.failed += 1;
                summary.errors.push(format!("{}: {error}", entry.event));
            }
        }
    }
    Ok(summary)
}

/// Run `command` through `sh -c` with `env`; Ok(description) on exit 0.
fn run_hook(
    command: &str,
    env: &[(String, String)],
    timeout: Duration,
) -> std::result::Result<String, String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start hook {command:?}: {e}"))?;
    // Drain stderr on a thread so a chatty hook cannot block on a full pipe.
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(64 * 1024).read_to_string(&mut text);
        }
        text
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "hook timed out after {}s and was killed",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("cannot wait for hook: {e}")),
        }
    };
    let err_text = reader.join().unwrap_or_default();
    let tail: String = err_text
        .trim()
        .chars()
        .rev()
        .take(300)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if status.success() {
        Ok(format!(
            "hook exited 0{}",
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        ))
    } else {
        Err(format!(
            "hook failed ({status}){}",
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        ))
    }
}
