//! `quorate`: the admin CLI of a quorate node (see `quorate --help`).

fn main() -> std::process::ExitCode {
    quorate::cli::main()
}
