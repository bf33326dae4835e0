use clap::{Parser, Subcommand};

/// Bake a reproducible chasquid mail server image, per-host cloud-init seeds and DNS records.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download the pinned Debian packages (packages.lock) into the cache and verify them.
    Fetch(mailbake::fetch::cli::FetchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Fetch(args) => mailbake::fetch::cli::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
