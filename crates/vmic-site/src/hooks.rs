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
    let timeout = site.config.hooks.timeout.duration();
    for entry in site.state.outbox()? {
        // Undelivered events stay queued for the next run.
        vmic_engine::cancel::check()?;
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

/// At most this much of a hook's stderr is kept for the log; the rest is
/// read and dropped, so a chatty hook never dies of a full or closed pipe.
const STDERR_KEPT: u64 = 64 * 1024;

/// Run `command` through `sh -c` with `env`, in a process group of its own;
/// Ok(description) on exit 0. On timeout the whole group is killed, so a
/// backgrounded child neither stalls the sync nor outlives the hook.
fn run_hook(
    command: &str,
    env: &[(String, String)],
    timeout: Duration,
) -> std::result::Result<String, String> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start hook {command:?}: {e}"))?;
    let group = child.id() as i32;
    let stderr = child.stderr.take();
    let (sent, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sent.send(drain(stderr));
    });
    let deadline = Instant::now() + timeout;
    let status = wait_until(&mut child, deadline).inspect_err(|_| kill_group(group, &mut child))?;
    // A child the hook left in the background may hold stderr open: wait for
    // the end of its output only until the deadline, then end the group.
    let remaining = deadline.saturating_duration_since(Instant::now());
    let err_text = received.recv_timeout(remaining).unwrap_or_else(|_| {
        kill_group(group, &mut child);
        String::new()
    });
    let tail = last_chars(err_text.trim(), 300);
    let detail = if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    };
    if status.success() {
        Ok(format!("hook exited 0{detail}"))
    } else {
        Err(format!("hook failed ({status}){detail}"))
    }
}

/// Read a pipe to its end, keeping the first [`STDERR_KEPT`] bytes.
fn drain(pipe: Option<std::process::ChildStderr>) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut kept = Vec::new();
    let _ = (&mut pipe).take(STDERR_KEPT).read_to_end(&mut kept);
    let _ = std::io::copy(&mut pipe, &mut std::io::sink());
    String::from_utf8_lossy(&kept).into_owned()
}

fn wait_until(
    child: &mut std::process::Child,
    deadline: Instant,
) -> std::result::Result<std::process::ExitStatus, String> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                return Err("hook timed out and was killed, with every process it started".into());
            }
            Ok(None) if vmic_engine::cancel::requested().is_some() => {
                return Err(
                    "hook stopped because vmic was interrupted; it runs again next time".into(),
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("cannot wait for hook: {e}")),
        }
    }
}

/// SIGKILL the hook's process group, then reap the hook itself.
fn kill_group(group: i32, child: &mut std::process::Child) {
    // SAFETY: kill(2) with a negative pid signals that process group; the
    // group was created for this hook (process_group(0)) and holds nothing
    // else of ours.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
    let _ = child.wait();
}

fn last_chars(text: &str, n: usize) -> String {
    let skip = text.chars().count().saturating_sub(n);
    text.chars().skip(skip).collect()
}
