//! The `mailbake` command line: parses arguments, runs one pipeline stage, reports errors.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use mailbake::site;

/// Bake a reproducible chasquid mail server image, per-host cloud-init seeds and DNS records
/// from one site file.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a site file offline and report every problem with its line and column.
    Check {
        /// The site file (YAML).
        site: PathBuf,
    },
}

/// Exit status for a site file that does not validate (as opposed to 1, "the step failed").
const EXIT_INVALID_SITE: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { site } => match site::load(&site) {
            Ok(loaded) => {
                println!(
                    "{}: ok: site `{}`, {} domain(s), {} host(s)",
                    site.display(),
                    loaded.site.site,
                    loaded.site.domains.len(),
                    loaded.site.hosts.len()
                );
                ExitCode::SUCCESS
            }
            Err(err) => report_site_error(err),
        },
    }
}

fn report_site_error(err: site::LoadError) -> ExitCode {
    match err {
        site::LoadError::Invalid(errors) => {
            eprint!("{}", errors.render(std::io::stderr().is_terminal()));
            ExitCode::from(EXIT_INVALID_SITE)
        }
        other => {
            eprintln!("{:?}", miette::Report::new(other));
            ExitCode::FAILURE
        }
    }
}
