use clap::Parser;

/// Bake a reproducible chasquid mail server image, per-host cloud-init seeds and DNS records.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
