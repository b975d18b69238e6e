//! The `vmic` command: parse arguments, call the library, print, exit.

mod cli;

fn main() {
    // A closed pipe (`vmic verify --json | head -1`) ends vmic quietly, with
    // the status every Unix filter has there, instead of a panic on the next
    // write. Rust ignores SIGPIPE by default; this restores the default.
    // SAFETY: called first thing, before any thread exists; SIG_DFL is a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(cli::run());
}
