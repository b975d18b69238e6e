//! Argument parsing and dispatch. One file per subcommand; everything here
//! only translates between the command line and the library.

mod approve;
mod audit;
mod build;
mod bundle;
mod check;
mod docs;
mod export;
mod images;
mod key;
mod keygen;
mod log;
mod mirror;
mod password;
mod progress;
mod resign;
mod reverify;
mod sign;
mod site;
mod sync;
mod trust;
mod verify;
mod vo;

use clap::{Parser, Subcommand};
use vmic_format::error::{Error, ErrorKind};

/// `--json`, the same on every command a script reads.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct JsonArg {
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `--jobs`, the same on every command that hashes.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct JobsArg {
    /// Hashing workers (default: one per core).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
}

/// `--state-dir`, the same on every command that writes a publication.
#[derive(clap::Args, Clone, Debug)]
pub struct StateDirArg {
    /// Where builds keep their digest cache and lock, one subdirectory per
    /// OUT_DIR (default: $XDG_STATE_HOME/vmic/build, else
    /// ~/.local/state/vmic/build). Never inside OUT_DIR, which is published.
    #[arg(long, value_name = "DIR", env = "VMIC_BUILD_STATE")]
    state_dir: Option<std::path::PathBuf>,
}

impl StateDirArg {
    /// The directory given, else `$XDG_STATE_HOME/vmic/build`, else
    /// `$HOME/.local/state/vmic/build`.
    pub fn root(self) -> vmic_format::error::Result<std::path::PathBuf> {
        if let Some(dir) = self.state_dir {
            return Ok(dir);
        }
        let absolute =
            |v: std::ffi::OsString| Some(std::path::PathBuf::from(v)).filter(|p| p.is_absolute());
        if let Some(state) = std::env::var_os("XDG_STATE_HOME").and_then(absolute) {
            return Ok(state.join("vmic/build"));
        }
        match std::env::var_os("HOME").and_then(absolute) {
            Some(home) => Ok(home.join(".local/state/vmic/build")),
            None => Err(Error::input(
                "neither XDG_STATE_HOME nor HOME is set: give --state-dir for the build's digest cache and lock",
            )),
        }
    }
}

/// Signed, static catalogs of virtual-machine images.
///
/// Exit codes: 0 ok; 1 verification or trust failure; 2 usage, configuration
/// or input error; 3 I/O or network failure worth retrying.
#[derive(Parser)]
#[command(
    name = "vmic",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = "Exit codes: 0 ok; 1 verification or trust failure; 2 usage, configuration or input error; 3 I/O or network failure worth retrying."
)]
struct Cli {
    /// Print nothing but errors (and --json output).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Site directory for site commands (default: $XDG_DATA_HOME/vmic/site);
    /// also accepted after a site command's name.
    #[arg(long, env = "VMIC_SITE", value_name = "DIR")]
    site: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Keygen(keygen::Args),
    Build(build::Args),
    Resign(resign::Args),
    /// Signing keys of a publication.
    #[command(subcommand)]
    Key(key::Command),
    Verify(verify::Args),
    /// Find rogue images: classify every file of hypervisor directories
    /// (approved, revoked, derived, derived-from-rogue, unknown).
    Audit(audit::Args),
    /// Golden-image attestation: is each file byte-identical to an
    /// approved, currently valid image (of the site, or of --catalog)?
    Check(check::Args),
    Mirror(mirror::Args),
    Sign(sign::Args),
    /// Export a publication for simplestreams or HEPiX image-list tools.
    #[command(subcommand)]
    Export(export::Command),
    /// Print a shell completion script (bash, zsh, fish, …).
    Completions(docs::CompletionArgs),
    /// Write the man pages (one per command) into a directory.
    Man(docs::ManArgs),
    /// Site setup.
    #[command(subcommand)]
    Site(site::Command),
    /// Manage trusted endorsers.
    #[command(subcommand)]
    Trust(trust::Command),
    /// Virtual organisations: build and co-sign endorser lists (VO
    /// managers); support VOs (sites).
    #[command(subcommand)]
    Vo(vo::Command),
    Sync(sync::Args),
    Bundle(bundle::Args),
    /// List the images the site knows, with their state; filters find
    /// images by endorser, VO, state, OS, arch, format, tag, cores, memory.
    Images(images::Args),
    /// Approve an image (ID or ID@VERSION) for import.
    Approve(approve::Args),
    /// Reject an image (ID or ID@VERSION); imported copies are withdrawn.
    Reject(approve::Args),
    /// Re-hash every imported image; tampering at rest is quarantined.
    Reverify {
        #[command(flatten)]
        json: JsonArg,
        #[command(flatten)]
        jobs: JobsArg,
    },
    /// Show the audit log (filtered), or check it as evidence (--verify).
    Log(log::Args),
}

/// Shared output settings.
#[derive(Clone, Copy)]
pub struct Output {
    pub quiet: bool,
    pub json: bool,
}

impl Output {
    /// Progress bars only for a person watching a terminal.
    pub fn show_progress(&self) -> bool {
        !self.quiet && !self.json && std::io::IsTerminal::is_terminal(&std::io::stderr())
    }

    pub fn say(&self, line: impl AsRef<str>) {
        if !self.quiet && !self.json {
            println!("{}", for_terminal(line.as_ref()));
        }
    }

    pub fn warn(&self, line: impl AsRef<str>) {
        eprintln!("vmic: warning: {}", for_terminal(line.as_ref()));
    }
}

/// A line on stderr, whatever `--quiet` says (failures are never quiet).
pub fn alert(line: impl AsRef<str>) {
    eprintln!("{}", for_terminal(line.as_ref()));
}

/// Text bound for a terminal, with every control character and bidi
/// override escaped: signed catalogs and stored reasons are someone else's
/// words, and must not move the cursor, retitle the window or reorder what
/// the operator reads.
pub fn for_terminal(text: &str) -> std::borrow::Cow<'_, str> {
    let hostile = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(hostile) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hostile(c) {
            out.push_str(&format!("\\u{{{:04x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The commands that use a site: each takes `--site` after its name too
/// (`vmic sync --site DIR`), and only these show it in their help, man page
/// and completions. `vmic --site DIR CMD` works for all.
const WITH_SITE: [&[&str]; 19] = [
    &["site", "init"],
    &["trust", "add"],
    &["trust", "edit"],
    &["trust", "list"],
    &["trust", "remove"],
    &["trust", "accept"],
    &["trust", "rekey"],
    &["vo", "add"],
    &["vo", "remove"],
    &["vo", "list"],
    &["sync"],
    &["bundle"],
    &["images"],
    &["approve"],
    &["reject"],
    &["reverify"],
    &["log"],
    &["check"],
    &["audit"],
];

/// The id of the per-command `--site`.
const SITE_HERE: &str = "site_here";

/// The command line as parsed (with `vmic help CMD`).
pub(crate) fn command() -> clap::Command {
    use clap::CommandFactory;
    with_site_args(Cli::command())
}

/// The command line as documented (man pages, completions): without the
/// `help` subcommands, which would otherwise get pages of their own.
pub(crate) fn command_for_docs() -> clap::Command {
    use clap::CommandFactory;
    fn no_help(cmd: clap::Command) -> clap::Command {
        let names: Vec<String> = cmd
            .get_subcommands()
            .map(|s| s.get_name().to_string())
            .collect();
        let mut cmd = cmd.disable_help_subcommand(true);
        for name in names {
            cmd = cmd.mut_subcommand(name, no_help);
        }
        cmd
    }
    with_site_args(no_help(Cli::command()))
}

fn with_site_args(mut cmd: clap::Command) -> clap::Command {
    for path in WITH_SITE {
        cmd = add_site(cmd, path);
    }
    cmd
}

fn add_site(cmd: clap::Command, path: &[&str]) -> clap::Command {
    match path {
        [] => cmd.arg(
            clap::Arg::new(SITE_HERE)
                .long("site")
                .env("VMIC_SITE")
                .value_name("DIR")
                .value_parser(clap::value_parser!(std::path::PathBuf))
                .help("Site directory (default: $XDG_DATA_HOME/vmic/site)"),
        ),
        [first, rest @ ..] => cmd.mut_subcommand(*first, |sub| add_site(sub, rest)),
    }
}

/// `--site` given after the command's name wins over the one before it.
fn site_from(
    matches: &clap::ArgMatches,
    before: Option<std::path::PathBuf>,
) -> Option<std::path::PathBuf> {
    let mut site = before;
    let mut level = matches;
    while let Some((_, sub)) = level.subcommand() {
        if let Ok(Some(dir)) = sub.try_get_one::<std::path::PathBuf>(SITE_HERE) {
            site = Some(dir.clone());
        }
        level = sub;
    }
    site
}

pub fn run() -> i32 {
    use clap::FromArgMatches;
    let parsed = command().try_get_matches().and_then(|m| {
        let mut cli = Cli::from_arg_matches(&m)?;
        cli.site = site_from(&m, cli.site.take());
        Ok(cli)
    });
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit_code(Some(ErrorKind::Input))
            } else {
                0
            };
        }
    };
    let quiet = cli.quiet;
    let result = match cli.command {
        Command::Keygen(args) => keygen::run(args, quiet),
        Command::Build(args) => build::run(args, quiet),
        Command::Resign(args) => resign::run(args, quiet),
        Command::Mirror(args) => mirror::run(args, quiet),
        Command::Key(cmd) => key::run(cmd, quiet),
        Command::Verify(args) => verify::run(args, quiet),
        Command::Check(args) => check::run(args, &cli.site, quiet),
        Command::Audit(args) => audit::run(args, &cli.site, quiet),
        Command::Sign(args) => sign::run(args, quiet),
        Command::Completions(args) => docs::completions(args),
        Command::Export(cmd) => export::run(cmd, quiet),
        Command::Man(args) => docs::man(args, Output { quiet, json: false }),
        Command::Site(cmd) => site::run(cmd, &cli.site, Output { quiet, json: false }),
        Command::Trust(cmd) => trust::run(cmd, &cli.site, quiet),
        Command::Vo(cmd) => vo::run(cmd, &cli.site, quiet),
        Command::Bundle(args) => bundle::run(args, &cli.site, quiet),
        Command::Sync(args) => sync::run(args, &cli.site, quiet),
        Command::Images(args) => images::run(args, &cli.site, quiet),
        Command::Approve(args) => approve::run(args, true, &cli.site, quiet),
        Command::Reject(args) => approve::run(args, false, &cli.site, quiet),
        Command::Reverify { json, jobs } => reverify::run(json.json, jobs.jobs, &cli.site, quiet),
        Command::Log(args) => log::run(args, &cli.site, quiet),
    };
    match result {
        Ok(code) => code,
        Err(e) => report_error(&e),
    }
}

pub fn report_error(e: &Error) -> i32 {
    alert(format!("vmic: error: {e}"));
    exit_code(Some(e.kind()))
}

/// The documented exit code of an outcome: decided here and nowhere else.
/// 0 ok; 1 verification or trust failure; 2 usage, configuration or input
/// error; 3 I/O or network failure worth retrying.
pub fn exit_code(failure: Option<ErrorKind>) -> i32 {
    match failure {
        None => 0,
        Some(ErrorKind::Verification) => 1,
        Some(ErrorKind::Input) => 2,
        Some(ErrorKind::Io) => 3,
    }
}

/// Print a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("vmic: error: cannot print JSON: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// Every command and every argument has a help text (the man pages
    /// and `--help` are made from them).
    #[test]
    fn every_command_and_argument_is_described() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if cmd.get_about().is_none() && !path.is_empty() {
                missing.push(format!("command `{path}`"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("`{path}` argument {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, format!("{path} {}", sub.get_name()).trim(), missing);
            }
        }
        let mut missing = Vec::new();
        let mut cmd = Cli::command();
        cmd.build();
        walk(&cmd, "", &mut missing);
        assert!(missing.is_empty(), "{missing:#?}");
    }

    #[test]
    fn terminal_output_escapes_control_and_bidi_characters() {
        assert_eq!(for_terminal("plain text"), "plain text");
        assert_eq!(
            for_terminal("a\u{1b}]0;x\u{7}b\u{202e}c\nd"),
            "a\\u{001b}]0;x\\u{0007}b\\u{202e}c\\u{000a}d"
        );
    }

    #[test]
    fn exit_codes_are_the_documented_ones() {
        assert_eq!(exit_code(None), 0);
        assert_eq!(exit_code(Some(ErrorKind::Verification)), 1);
        assert_eq!(exit_code(Some(ErrorKind::Input)), 2);
        assert_eq!(exit_code(Some(ErrorKind::Io)), 3);
    }
}
