//! turnd's entry point: parse the command line and run it. Everything else is in the library.

fn main() {
    let cli = turnd::cli::Cli::from_env_and_args();
    if let Err(e) = turnd::cli::run(cli) {
        eprintln!("turnd: {e:#}");
        std::process::exit(2);
    }
}
