//! Argument parsing and dispatch. One file per subcommand; everything here
//! only translates between the command line and the library.

mod build;
mod keygen;
mod password;
mod progress;
mod sign;
mod verify;

use clap::{Parser, Subcommand};
use vmic::error::{Error, ErrorKind};

/// Signed, static catalogs of virtual-machine images.
///
/// Exit codes: 0 ok; 1 verification or trust failure; 2 usage, configuration
/// or input error; 3 I/O or network failure worth retrying.
#[derive(Parser)]
#[command(name = "vmic", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Print nothing but errors (and --json output).
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Keygen(keygen::Args),
    Build(build::Args),
    Verify(verify::Args),
    Sign(sign::Args),
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
            println!("{}", line.as_ref());
        }
    }

    pub fn warn(&self, line: impl AsRef<str>) {
        eprintln!("vmic: warning: {}", line.as_ref());
    }
}

pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ErrorKind::Input.exit_code()
            } else {
                0
            };
        }
    };
    let quiet = cli.quiet;
    let result = match cli.command {
        Command::Keygen(args) => keygen::run(args, quiet),
        Command::Build(args) => build::run(args, quiet),
        Command::Verify(args) => verify::run(args, quiet),
        Command::Sign(args) => sign::run(args, quiet),
    };
    match result {
        Ok(code) => code,
        Err(e) => report_error(&e),
    }
}

pub fn report_error(e: &Error) -> i32 {
    eprintln!("vmic: error: {e}");
    e.kind().exit_code()
}

/// Print a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("vmic: error: cannot print JSON: {e}"),
    }
}
