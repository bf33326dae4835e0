//! `mailbake boot`: start a guest, report the forwarded ports and readiness, keep it running
//! until Ctrl-C or `--timeout`, then stop it cleanly.

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::user_net::UserNet;
use super::{Accel, DiskBus, Firmware, Vm, VmOptions};

/// Boot a disk image in QEMU (SeaBIOS → GRUB → Linux) with the mail and SSH ports forwarded
/// to 127.0.0.1.
#[derive(Debug, clap::Args)]
pub struct BootArgs {
    /// The site file: boot with the seed of one of its hosts (made from the site and its
    /// secrets store, as `mailbake build` would)
    #[arg(value_name = "SITE", conflicts_with = "seed")]
    pub site: Option<PathBuf>,
    /// The host whose seed to attach (needed when the site has several)
    #[arg(long, value_name = "H", requires = "site")]
    pub host: Option<String>,
    /// Secrets store for the seed [default: secrets/ beside the site file]
    #[arg(long, value_name = "DIR", requires = "site")]
    pub secrets: Option<PathBuf>,
    /// Disk image (qcow2 or raw) from `mailbake image`
    #[arg(long, value_name = "X.qcow2")]
    pub image: PathBuf,
    /// NoCloud seed image (vfat or ISO labelled cidata), instead of SITE
    #[arg(long, value_name = "seed.img")]
    pub seed: Option<PathBuf>,
    /// CPU emulation; kvm is opt-in (nested guests hang on some hosts)
    #[arg(long, value_enum, default_value = "tcg")]
    pub accel: Accel,
    /// Guest memory in MiB (256 to 65536; the image needs about 512 to boot)
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(256..=65536))]
    pub memory: u32,
    /// Virtual CPUs (1 to 64)
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub cpus: u32,
    /// Write the serial console here (default: a temp file, shown on failure)
    #[arg(long, value_name = "FILE")]
    pub serial_log: Option<PathBuf>,
    /// Stop after this many seconds; failing if SMTP was not ready by then
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Host ports PORT.. for guest ports 25, 465, 587, 22 (default: free ports)
    #[arg(long, value_name = "PORT", value_parser = parse_forward_base)]
    pub forward_base: Option<u16>,
    /// Write guest changes into the image instead of a throw-away overlay
    #[arg(long)]
    pub persistent: bool,
    /// Firmware: bios (SeaBIOS, as Contabo's VPS boot) or uefi (OVMF, package ovmf)
    #[arg(long, value_enum, default_value = "bios")]
    pub firmware: Firmware,
    /// Disk controller: virtio (virtio-blk) or virtio-scsi (as Contabo attaches disks)
    #[arg(long, value_enum, default_value = "virtio")]
    pub disk_bus: DiskBus,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn run(args: BootArgs) -> anyhow::Result<()> {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    // What a killed earlier boot left in the temp directory: its seed and its VM directory.
    let tmp = std::env::temp_dir();
    crate::workdir::remove_stale(&tmp, SEED_DIR_PREFIX);
    crate::workdir::remove_stale(&tmp, super::VM_DIR_PREFIX);
    // Kept alive until the guest stops: QEMU reads the seed from it.
    let site_seed = match &args.site {
        Some(site) => Some(seed_for_host(
            site,
            args.host.as_deref(),
            args.secrets.as_deref(),
        )?),
        None => None,
    };
    let mut opts = VmOptions::new(&args.image);
    opts.seed = match &site_seed {
        Some(seed) => Some(seed.path.clone()),
        None => args.seed,
    };
    if let Some(seed) = &site_seed {
        match &seed.user_net {
            Ok(layout) => {
                eprintln!(
                    "user network: {} (the host at {}, slirp at {})",
                    layout.net, layout.guest, layout.gateway
                );
                opts.user_net = Some(layout.clone());
            }
            // Booting still shows the guest; the console says what it waited for.
            Err(reason) => eprintln!(
                "warning: the user network cannot give the host its own IPv4 address ({reason}); \
                 its network-ready waits for it until that gives up, then chasquid starts"
            ),
        }
    }
    opts.accel = args.accel;
    opts.memory_mib = args.memory;
    opts.cpus = args.cpus;
    opts.serial_log = args.serial_log;
    opts.forward_base = args.forward_base;
    opts.snapshot = !args.persistent;
    opts.firmware = args.firmware;
    opts.disk_bus = args.disk_bus;
    let start = Instant::now();
    let deadline = args.timeout.map(|s| start + Duration::from_secs(s));
    let mut vm = Vm::start(&opts).with_context(|| format!("booting {}", args.image.display()))?;
    for (guest, host) in vm.forwards() {
        eprintln!("forward: guest port {guest:>3} -> {host}");
    }
    eprintln!("serial console: {}", vm.serial_log().display());

    // Poll SMTP in short slices so Ctrl-C and the deadline are noticed promptly.
    let mut ready = false;
    while !STOP.load(Ordering::SeqCst) {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if !ready {
            match vm.wait_for_smtp(Duration::from_secs(1)) {
                Ok((t, banner)) => {
                    ready = true;
                    eprintln!("SMTP ready after {:.1} s: {banner}", t.as_secs_f64());
                    eprintln!("running; Ctrl-C stops the guest");
                }
                Err(super::BootError::Timeout { .. }) => {}
                Err(e) => return Err(e).context("waiting for SMTP"),
            }
        } else {
            std::thread::sleep(Duration::from_millis(200));
            if !vm.is_running() {
                eprintln!("guest stopped");
                return Ok(());
            }
        }
    }
    eprintln!("stopping QEMU");
    vm.shutdown().context("stopping QEMU")?;
    if !ready {
        bail!(
            "SMTP on guest port 25 did not answer with 220 within {:.0} s; serial console: {}",
            start.elapsed().as_secs_f64(),
            vm.serial_log().display()
        );
    }
    Ok(())
}

/// The seed image of `host` (or of the site's only host), written to a private temp file.
fn seed_for_host(
    site: &std::path::Path,
    host: Option<&str>,
    secrets: Option<&std::path::Path>,
) -> anyhow::Result<SeedDir> {
    let loaded = crate::site::load(site)?;
    let secrets = secrets
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| crate::secrets::SecretStore::default_path(site));
    let store = crate::secrets::open_for_site(&loaded, &secrets)?;
    let context = crate::template::SiteContext::for_site(&loaded)?;
    let seeds = crate::seed::build(&loaded, &context, store.as_ref())?;
    let names: Vec<&str> = seeds.iter().map(|s| s.host.as_str()).collect();
    let chosen = match host {
        Some(h) => seeds.iter().find(|s| s.host == h).with_context(|| {
            format!(
                "{} has no host `{h}`; its hosts: {}",
                site.display(),
                names.join(", ")
            )
        })?,
        None if seeds.len() == 1 => &seeds[0],
        None => bail!(
            "{} has several hosts ({}); choose one with --host",
            site.display(),
            names.join(", ")
        ),
    };
    // The seed holds the host's secrets: a 0700 directory of our own, removed when the boot
    // ends, and by the next boot if this one is killed.
    let tmp = std::env::temp_dir();
    let dir = crate::workdir::create(&tmp, SEED_DIR_PREFIX)
        .with_context(|| format!("creating a private directory in {}", tmp.display()))?;
    let path = dir.path().join("seed.img");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, &chosen.image)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "seed: host {} ({}), instance-id {}",
        chosen.host, chosen.fqdn, chosen.instance_id
    );
    let user_net = loaded
        .site
        .hosts
        .iter()
        .find(|(name, _)| name.to_string() == chosen.host)
        .map(|(_, host)| UserNet::for_host(host))
        .unwrap_or_else(|| Err(format!("the site has no host `{}`", chosen.host)));
    Ok(SeedDir {
        _dir: dir,
        path,
        user_net,
    })
}

/// Prefix of the private directory holding a boot's seed image.
const SEED_DIR_PREFIX: &str = "mailbake-boot-";

/// A seed image in its private directory; both are removed on drop.
struct SeedDir {
    /// Kept for its `Drop`, which removes the directory.
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// The user network that gives the host its own IPv4 address, or why there is none.
    user_net: Result<UserNet, String>,
}

/// `--forward-base`: the first of the host ports for guest ports 25, 465, 587 and 22, so all
/// four must be real ports (port 0 would let the kernel pick, and past 65535 they wrap).
fn parse_forward_base(text: &str) -> Result<u16, String> {
    const COUNT: u16 = super::DEFAULT_GUEST_PORTS.len() as u16;
    let last = u16::MAX - (COUNT - 1);
    text.parse::<u16>()
        .ok()
        .filter(|base| (1..=last).contains(base))
        .ok_or_else(|| {
            format!(
                "`{}`: give the first of {COUNT} host ports, from 1 to {last} (e.g. 10025)",
                text.escape_debug()
            )
        })
}

#[cfg(test)]
mod forward_base_tests {
    use super::parse_forward_base;

    #[test]
    fn the_forward_base_leaves_room_for_four_real_ports() {
        assert_eq!(parse_forward_base("10025"), Ok(10025));
        assert_eq!(parse_forward_base("65532"), Ok(65532));
        for bad in ["0", "65533", "65535", "70000", "-1", ""] {
            let said = parse_forward_base(bad).unwrap_err();
            assert!(said.contains("from 1 to 65532"), "{bad:?}: {said}");
        }
    }
}
