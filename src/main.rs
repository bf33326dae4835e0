//! The `mailbake` command line: parses arguments, runs one pipeline stage, reports errors.
//!
//! Exit status: 0 success, 1 the step failed, 2 bad command line, 3 invalid site file.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use mailbake::{build, site};

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
    /// Start a new site: write DIR/site.yaml (one domain, one host, placeholders marked
    /// REPLACE) and an empty secrets store DIR/secrets/ (0700). Never overwrites anything.
    Init(mailbake::init::InitArgs),
    /// Validate a site file offline and report its problems with line and column: every
    /// broken domain and host entry, every other broken section, and every cross-check
    /// (a YAML syntax error stops the check where it is).
    Check {
        /// The site file (YAML).
        site: PathBuf,
    },
    /// Build the site's artifacts into DIR: overlay.tar, overlay.tar.zst, MANIFEST, per-host
    /// seeds (hosts/<host>/seed/ and seed.img), SHA256SUMS.
    Build(BuildArgs),
    /// Download the pinned Debian packages (packages.lock) into the cache and verify them.
    Fetch(mailbake::fetch::cli::FetchArgs),
    /// Build a bootable disk image: pinned base root tarball + overlay.
    Image(mailbake::image::cli::ImageArgs),
    /// Boot a disk image in QEMU with the mail and SSH ports forwarded to loopback.
    Boot(mailbake::boot::cli::BootArgs),
    /// Manage users' password hashes in the secrets store.
    #[command(subcommand)]
    User(mailbake::secrets::cli::UserCommand),
    /// Manage DKIM keys in the secrets store.
    #[command(subcommand)]
    Dkim(mailbake::secrets::cli::DkimCommand),
    /// Print the DNS records the site needs: MX, A/AAAA, PTR, SPF, DKIM, DMARC (and MTA-STS,
    /// TLS-RPT when enabled), as zone-file fragments, a registrar table or JSON.
    Dns(mailbake::dns::cli::DnsArgs),
    /// Check a live deployment the way receivers judge it: MX, addresses, PTR (v4 and v6), SPF
    /// evaluated, DKIM against the secrets store, DMARC, MTA-STS, TLS-RPT, SMTP and TLS,
    /// DNSBLs. Exit 1 when a check fails.
    Verify(mailbake::verify::cli::VerifyArgs),
    /// Obtain or renew each host's ACME certificate from where mailbake runs and keep it, with
    /// the ACME account, in the secrets store; a certificate good for more than 30 days is
    /// kept as it is. `build` then puts it into the host's seed.
    Cert(mailbake::cert::cli::CertArgs),
    /// Before a reinstall: over SSH, close port 25 (and with --all 587 and 465), make chasquid
    /// try every queued message now, wait until the queue is empty or the timeout passes, and
    /// list (or --export) what is left. Exit 0 only when the queue is empty or exported.
    Drain(mailbake::drain::cli::DrainArgs),
    /// Submit one test message with SMTP AUTH over TLS (465, or STARTTLS on 587) and print the
    /// certificate, a transcript, the server's reply and the Message-ID.
    SendTest(mailbake::send_test::SendTestArgs),
    /// Write a Terraform/OpenTofu configuration that runs the site's hosts on Contabo from an
    /// image built by `mailbake image`.
    Terraform(mailbake::terraform::cli::TerraformArgs),
    /// Print mailbake's version; with --verbose, the digests of the layers, cloud-init
    /// templates and lock file built into it.
    Version {
        /// Also print the digests of the built-in data.
        #[arg(long, short)]
        verbose: bool,
    },
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The site file (YAML).
    site: PathBuf,
    /// Output directory; replaced atomically, and only if it is empty or an earlier `build --out`.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Lock file pinning the Debian packages [default: the packages.lock built into mailbake].
    #[arg(long, value_name = "FILE")]
    lock: Option<PathBuf>,
    /// Package cache [default: $MAILBAKE_CACHE, else $XDG_CACHE_HOME/mailbake, else ~/.cache/mailbake].
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Layers directory [default: the layers/ built into mailbake].
    #[arg(long, value_name = "DIR")]
    layers: Option<PathBuf>,
    /// Secrets store the per-host seeds copy users, DKIM keys and credentials from
    /// [default: secrets/ beside the site file].
    #[arg(long, value_name = "DIR")]
    secrets: Option<PathBuf>,
    /// Timestamp for every file in the artifacts (seconds since 1970).
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = mailbake::epoch::DEFAULT_SOURCE_DATE_EPOCH, value_parser = mailbake::epoch::parse)]
    source_date_epoch: u64,
}

/// Exit status for a site file that does not validate (as opposed to 1, "the step failed").
const EXIT_INVALID_SITE: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => mailbake::init::run(&args, &mut std::io::stdout()),
        Command::Check { site } => check(&site),
        Command::Build(args) => run_build(args),
        Command::Fetch(args) => mailbake::fetch::cli::run(&args),
        Command::Image(args) => mailbake::image::cli::run(args),
        Command::Boot(args) => mailbake::boot::cli::run(args),
        Command::User(command) => {
            mailbake::secrets::cli::run_user(&command, &mut std::io::stdout())
        }
        Command::Dkim(command) => {
            mailbake::secrets::cli::run_dkim(&command, &mut std::io::stdout())
        }
        Command::Dns(args) => mailbake::dns::cli::run(&args),
        Command::Verify(args) => match mailbake::verify::cli::run_cli(&args) {
            Ok(false) => Ok(()),
            Ok(true) => return ExitCode::FAILURE,
            Err(err) => Err(err),
        },
        Command::SendTest(args) => mailbake::send_test::run(&args),
        Command::Cert(args) => mailbake::cert::cli::run(&args, &mut std::io::stdout()),
        Command::Drain(args) => mailbake::drain::cli::run(&args, &mut std::io::stdout()),
        Command::Terraform(args) => mailbake::terraform::cli::run(&args),
        Command::Version { verbose } => {
            match verbose {
                true => print!("{}", mailbake::shipped::describe()),
                false => println!("mailbake {}", env!("CARGO_PKG_VERSION")),
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(err),
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let loaded = site::load(path)?;
    println!(
        "{}: ok: site `{}`, {} domain(s), {} host(s)",
        path.display(),
        loaded.site.site,
        loaded.site.domains.len(),
        loaded.site.hosts.len()
    );
    Ok(())
}

fn run_build(args: BuildArgs) -> anyhow::Result<()> {
    let secrets = args
        .secrets
        .unwrap_or_else(|| mailbake::secrets::SecretStore::default_path(&args.site));
    let opts = build::BuildOptions {
        secrets,
        site: args.site,
        out: args.out,
        lock: args.lock,
        cache: args.cache,
        layers: args.layers,
        source_date_epoch: args.source_date_epoch,
    };
    let report = build::run(&opts, &mut std::io::stderr().lock())?;
    for file in &report.files {
        let (digest, size) = (&file.sha256, file.size);
        println!(
            "{digest}  {size:>10}  {}",
            opts.out.join(&file.path).display()
        );
    }
    Ok(())
}

/// Prints an error the way its kind deserves and picks the exit status.
fn report(err: anyhow::Error) -> ExitCode {
    if let Some(site::LoadError::Invalid(errors)) = err.downcast_ref::<site::LoadError>() {
        eprint!("{}", errors.render(std::io::stderr().is_terminal()));
        return ExitCode::from(EXIT_INVALID_SITE);
    }
    // Errors can quote bytes from the input (a path inside a garbage archive, a value):
    // never send raw control characters to the terminal, nor megabytes of them.
    let text = site::bound_message(&format!("{err:#}"));
    eprintln!("error: {text}");
    ExitCode::FAILURE
}
