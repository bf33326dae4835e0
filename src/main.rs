use clap::{Parser, Subcommand};

/// Bake a reproducible chasquid mail server image, per-host cloud-init seeds and DNS records.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a bootable disk image: pinned base root tarball + overlay
    Image(mailbake::image::cli::ImageArgs),
    /// Boot a disk image in QEMU with the mail and SSH ports forwarded to loopback
    Boot(mailbake::boot::cli::BootArgs),
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Cmd::Image(a) => mailbake::image::cli::run(a),
        Cmd::Boot(a) => mailbake::boot::cli::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
