//! The `vmic` command: parse arguments, call the library, print, exit.

mod cli;

fn main() {
    std::process::exit(cli::run());
}
