//! Booting a disk image in QEMU the way the VPS provider does: SeaBIOS → GRUB → Linux from the
//! disk (no `-kernel`), with the cloud-init seed as a second drive, under TCG by default. The
//! disk can sit on virtio-scsi as Contabo attaches it, and the firmware can be UEFI (OVMF) for
//! providers that boot that way.
//!
//! Networking is QEMU's user-mode stack (slirp) by default, so guest traffic never leaves the
//! process: the guest reaches the host's loopback through slirp's address (10.0.2.2, or the
//! site's gateway when [`VmOptions::user_net`] lays the network out as the site's) and the mail
//! and SSH ports are forwarded to `127.0.0.1:<port>` only. IPv6 is on in slirp so the guest's IPv6 configuration
//! is exercised. The boot tests instead plug the guest into a tap device of a network namespace
//! they made ([`Network::Tap`] with [`VmOptions::netns`]), where it has the site's own addresses.
//!
//! A [`Vm`] owns the QEMU process: dropping it stops QEMU, so a failing test never leaves a
//! guest behind.

pub mod cli;
pub mod user_net;

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Guest ports forwarded by default: SMTP, submissions (implicit TLS), submission, SSH.
pub const DEFAULT_GUEST_PORTS: [u16; 4] = [25, 465, 587, 22];

/// CPU emulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Accel {
    /// Software emulation: slow (about a minute to a login prompt) but works everywhere.
    #[default]
    Tcg,
    /// Hardware virtualisation; opt-in because nested guests hang on some hosts.
    Kvm,
}

/// The guest's network card.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Network {
    /// QEMU's user-mode network with [`VmOptions::guest_ports`] forwarded to loopback.
    #[default]
    User,
    /// An existing tap device (`-netdev tap,ifname=…,script=no,downscript=no`): no user
    /// network, no forwards; whoever made the tap decides where it leads.
    Tap { ifname: String },
}

/// The firmware that boots the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default: GRUB from the disk's boot sector, as Contabo's VPS boot.
    #[default]
    Bios,
    /// UEFI (OVMF, Debian package `ovmf`): GRUB from the disk's EFI system partition.
    Uefi,
}

/// OVMF's firmware code and the template of its variable store (Debian's `ovmf`, 4 MiB
/// build without Secure Boot keys). Each boot gets its own copy of the variables.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The controller the disk is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DiskBus {
    /// virtio-blk (`/dev/vda` in the guest).
    #[default]
    Virtio,
    /// A `scsi-hd` on a virtio-scsi controller (`/dev/sda`), as Contabo attaches its VPS
    /// disks (their custom-image documentation requires the virtio_scsi driver).
    VirtioScsi,
}

/// How QEMU caches the disk image on the host (`-drive cache=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskCache {
    /// `cache=unsafe`: guest flushes are ignored and qcow2 metadata stays in QEMU's memory
    /// until it exits. The fastest mode for test boots, and safe as long as QEMU ends cleanly
    /// ([`Vm::shutdown`]); a killed QEMU loses writes the guest did flush.
    #[default]
    Unsafe,
    /// `cache=writeback`: writes go to the host's page cache, and a guest flush (an fsync in
    /// the guest) writes qcow2's metadata and fdatasyncs the image before it completes. A
    /// killed QEMU ([`Vm::kill`]) then loses what the guest had not flushed and nothing it
    /// had: a power cut for the guest, with the host's disk intact. `directsync` would honour
    /// flushes too, but makes every guest write synchronous, which slows a TCG boot for
    /// nothing a power-loss test measures.
    Writeback,
}

impl DiskCache {
    fn qemu_value(self) -> &'static str {
        match self {
            DiskCache::Unsafe => "unsafe",
            DiskCache::Writeback => "writeback",
        }
    }
}

/// How to start a [`Vm`].
#[derive(Debug, Clone)]
pub struct VmOptions {
    pub image: PathBuf,
    /// NoCloud seed (vfat or ISO 9660 labelled `cidata`), attached read-only.
    pub seed: Option<PathBuf>,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Serial console log; a file in a private temp dir when `None`.
    pub serial_log: Option<PathBuf>,
    /// Host ports `base, base+1, …` for [`Self::guest_ports`] in order; free ports when `None`.
    pub forward_base: Option<u16>,
    pub guest_ports: Vec<u16>,
    /// Write guest changes to a throw-away overlay instead of the image (the default: a test
    /// boot must not change the artifact that gets uploaded). Guest reboots keep the changes.
    pub snapshot: bool,
    pub qemu: PathBuf,
    pub network: Network,
    /// The user network laid out as the site's (`mailbake boot SITE`); QEMU's 10.0.2.0/24
    /// when `None`. Ignored on a tap.
    pub user_net: Option<user_net::UserNet>,
    /// Run QEMU inside this network namespace (`ip netns exec NAME`), where its tap lives.
    pub netns: Option<String>,
    pub disk_cache: DiskCache,
    pub firmware: Firmware,
    pub disk_bus: DiskBus,
}

impl VmOptions {
    pub fn new(image: impl Into<PathBuf>) -> VmOptions {
        VmOptions {
            image: image.into(),
            seed: None,
            accel: Accel::Tcg,
            memory_mib: 1024,
            cpus: 2,
            serial_log: None,
            forward_base: None,
            guest_ports: DEFAULT_GUEST_PORTS.to_vec(),
            snapshot: true,
            qemu: PathBuf::from("qemu-system-x86_64"),
            network: Network::User,
            user_net: None,
            netns: None,
            disk_cache: DiskCache::Unsafe,
            firmware: Firmware::Bios,
            disk_bus: DiskBus::Virtio,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("UEFI firmware {} not found\n  fix: apt-get install ovmf", .0.display())]
    NoFirmware(PathBuf),
    #[error("cannot start {qemu}: {source}\n  fix: apt-get install qemu-system-x86")]
    Spawn {
        qemu: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "QEMU exited ({status}) before {waiting_for}\n--- QEMU stderr ---\n{stderr}\n--- serial console (last lines) ---\n{serial}"
    )]
    Exited {
        status: String,
        waiting_for: String,
        stderr: String,
        serial: String,
    },
    #[error(
        "timed out after {secs} s waiting for {waiting_for}\n--- serial console (last lines) ---\n{serial}"
    )]
    Timeout {
        secs: u64,
        waiting_for: String,
        serial: String,
    },
    #[error("no free loopback port: {0}")]
    NoPort(io::Error),
    #[error("--forward-base {base}: ports {base}..{} do not fit below 65536", u32::from(*base) + *count as u32 - 1)]
    PortRange { base: u16, count: usize },
    #[error("guest port {0} is not forwarded (forwarded: {1})")]
    NotForwarded(u16, String),
    #[error("QMP on {path}: {reason}")]
    Qmp { path: PathBuf, reason: String },
    #[error("interrupted")]
    Interrupted,
}

fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> BootError {
    let path = path.into();
    move |source| BootError::Io { path, source }
}

/// Detects qcow2 by its magic so QEMU is never left to guess the format (guessing is refused
/// for raw images written by guests, and would be a security hole).
fn image_format(path: &Path) -> Result<&'static str, BootError> {
    let mut magic = [0u8; 4];
    let mut f = File::open(path).map_err(io_err(path))?;
    let n = f.read(&mut magic).map_err(io_err(path))?;
    Ok(if n == 4 && magic == *b"QFI\xfb" {
        "qcow2"
    } else {
        "raw"
    })
}

/// A running QEMU guest.
pub struct Vm {
    child: Option<Child>,
    qmp: PathBuf,
    serial_log: PathBuf,
    stderr_log: PathBuf,
    forwards: Vec<(u16, SocketAddr)>,
    started: Instant,
    _dir: tempfile::TempDir,
}

/// QEMU's arguments for the disk image on its bus; with `snapshot`, writes go to a temporary
/// overlay and never reach the image.
fn disk_args(opts: &VmOptions, format: &str) -> Vec<String> {
    let bus = match opts.disk_bus {
        DiskBus::Virtio => "virtio",
        DiskBus::VirtioScsi => "none,id=disk0",
    };
    let mut disk = format!(
        "file={},format={format},if={bus},cache={}",
        qemu_path(&opts.image),
        opts.disk_cache.qemu_value()
    );
    if opts.snapshot {
        disk.push_str(",snapshot=on");
    }
    let mut args = vec!["-drive".to_string(), disk];
    if opts.disk_bus == DiskBus::VirtioScsi {
        args.extend(
            [
                "-device",
                "virtio-scsi-pci,id=scsi0",
                "-device",
                "scsi-hd,drive=disk0,bus=scsi0.0,bootindex=0",
            ]
            .map(String::from),
        );
    }
    args
}

/// QEMU's arguments for the firmware: none for SeaBIOS; for UEFI, OVMF's code read-only and
/// a private copy of its variable store in `dir`.
fn firmware_args(opts: &VmOptions, dir: &Path) -> Result<Vec<String>, BootError> {
    match opts.firmware {
        Firmware::Bios => Ok(Vec::new()),
        Firmware::Uefi => {
            let code = Path::new(OVMF_CODE);
            if !code.is_file() {
                return Err(BootError::NoFirmware(code.to_path_buf()));
            }
            let vars = dir.join("OVMF_VARS.fd");
            fs::copy(OVMF_VARS, &vars).map_err(|_| BootError::NoFirmware(OVMF_VARS.into()))?;
            Ok(vec![
                "-drive".into(),
                format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    qemu_path(code)
                ),
                "-drive".into(),
                format!("if=pflash,format=raw,unit=1,file={}", qemu_path(&vars)),
            ])
        }
    }
}

impl Vm {
    /// Starts QEMU and returns at once; use the `wait_for_*` methods to follow the boot.
    pub fn start(opts: &VmOptions) -> Result<Vm, BootError> {
        let format = image_format(&opts.image)?;
        if let Some(seed) = &opts.seed {
            fs::metadata(seed).map_err(io_err(seed))?;
        }
        let tmp = std::env::temp_dir();
        crate::workdir::remove_stale(&tmp, VM_DIR_PREFIX);
        let dir = crate::workdir::create(&tmp, VM_DIR_PREFIX).map_err(io_err(&tmp))?;
        let qmp = dir.path().join("qmp.sock");
        let stderr_log = dir.path().join("qemu.stderr");
        let serial_log = opts
            .serial_log
            .clone()
            .unwrap_or_else(|| dir.path().join("serial.log"));
        // Create it now so a reader never races QEMU's open.
        File::create(&serial_log).map_err(io_err(&serial_log))?;

        let (netdev, forwards) = netdev(opts)?;
        let disk = disk_args(opts, format);
        let firmware = firmware_args(opts, dir.path())?;
        let mut cmd = match &opts.netns {
            // `ip` execs QEMU itself: the child's pid is QEMU's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&opts.qemu);
                c
            }
            None => Command::new(&opts.qemu),
        };
        cmd.args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-machine", "pc"])
            .args([
                "-accel",
                match opts.accel {
                    Accel::Tcg => "tcg",
                    Accel::Kvm => "kvm",
                },
            ])
            .args(["-m", &opts.memory_mib.to_string()])
            .args(["-smp", &opts.cpus.to_string()])
            .args(&firmware)
            .args(&disk);
        if let Some(seed) = &opts.seed {
            cmd.args([
                "-drive",
                &format!("file={},format=raw,if=virtio,readonly=on", qemu_path(seed)),
            ]);
        }
        cmd.args(["-netdev", &netdev])
            .args(["-device", "virtio-net-pci,netdev=net0"])
            .args(["-serial", &format!("file:{}", serial_log.display())])
            .args([
                "-qmp",
                &format!("unix:{},server=on,wait=off", qmp.display()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr_log).map_err(io_err(&stderr_log))?)
            // Own process group: a terminal Ctrl-C reaches mailbake, which then shuts QEMU down
            // in order, instead of killing both at once.
            .process_group(0);
        // Even a `kill -9` of mailbake leaves no guest running (its own group is out of
        // reach of the terminal's signals).
        crate::child::die_with_parent(&mut cmd, "mailbake exited before QEMU started");
        let child = cmd.spawn().map_err(|source| BootError::Spawn {
            qemu: opts.qemu.clone(),
            source,
        })?;
        Ok(Vm {
            child: Some(child),
            qmp,
            serial_log,
            stderr_log,
            forwards,
            started: Instant::now(),
            _dir: dir,
        })
    }

    /// Host address forwarded to `guest_port`.
    pub fn forwarded(&self, guest_port: u16) -> Result<SocketAddr, BootError> {
        self.forwards
            .iter()
            .find(|(g, _)| *g == guest_port)
            .map(|(_, h)| *h)
            .ok_or_else(|| {
                let list: Vec<String> = self.forwards.iter().map(|(g, _)| g.to_string()).collect();
                BootError::NotForwarded(guest_port, list.join(", "))
            })
    }

    /// QEMU's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// All (guest port, host address) pairs.
    pub fn forwards(&self) -> &[(u16, SocketAddr)] {
        &self.forwards
    }

    pub fn serial_log(&self) -> &Path {
        &self.serial_log
    }

    /// Everything the guest wrote to its serial console so far.
    pub fn serial_text(&self) -> String {
        fs::read(&self.serial_log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Time since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn serial_tail(&self) -> String {
        let text = self.serial_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `Err(Exited)` if QEMU has stopped.
    fn check_alive(&mut self, waiting_for: &str) -> Result<(), BootError> {
        let status: Option<ExitStatus> = match self.child.as_mut() {
            Some(c) => c.try_wait().map_err(io_err(&self.stderr_log))?,
            None => return Err(BootError::Interrupted),
        };
        match status {
            None => Ok(()),
            Some(status) => Err(BootError::Exited {
                status: status.to_string(),
                waiting_for: waiting_for.into(),
                stderr: fs::read_to_string(&self.stderr_log).unwrap_or_default(),
                serial: self.serial_tail(),
            }),
        }
    }

    /// Waits until the serial console contains `pattern`; returns the time since start.
    pub fn wait_for_serial(
        &mut self,
        pattern: &str,
        timeout: Duration,
    ) -> Result<Duration, BootError> {
        let what = format!("{pattern:?} on the serial console");
        let deadline = Instant::now() + timeout;
        loop {
            if self.serial_text().contains(pattern) {
                return Ok(self.elapsed());
            }
            self.check_alive(&what)?;
            if Instant::now() >= deadline {
                return Err(BootError::Timeout {
                    secs: timeout.as_secs(),
                    waiting_for: what,
                    serial: self.serial_tail(),
                });
            }
            sleep(Duration::from_millis(250));
        }
    }

    /// Waits until the forwarded guest port 25 answers with an SMTP `220` greeting; returns the
    /// time since start and the greeting line. slirp accepts host connections even before the
    /// guest listens (and then drops them), so only the greeting proves the server is up.
    pub fn wait_for_smtp(&mut self, timeout: Duration) -> Result<(Duration, String), BootError> {
        let addr = self.forwarded(25)?;
        let what = format!("an SMTP 220 greeting on {addr} (guest port 25)");
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive(&what)?;
            if let Some(line) = smtp_greeting(addr) {
                return Ok((self.elapsed(), line));
            }
            if Instant::now() >= deadline {
                return Err(BootError::Timeout {
                    secs: timeout.as_secs(),
                    waiting_for: what,
                    serial: self.serial_tail(),
                });
            }
            sleep(Duration::from_secs(1));
        }
    }

    /// Whether QEMU is still running.
    pub fn is_running(&mut self) -> bool {
        self.check_alive("").is_ok()
    }

    /// Stops QEMU: QMP `quit` (clean, flushes disks), then SIGTERM, then SIGKILL; waits for it
    /// in every case. Idempotent.
    pub fn shutdown(&mut self) -> Result<(), BootError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait().ok().flatten().is_some() {
            return Ok(());
        }
        let qmp_result = qmp_quit(&self.qmp);
        if wait_timeout(&mut child, Duration::from_secs(10)) {
            return qmp_result;
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: plain kill(2) on our own child's pid, which we have not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        if wait_timeout(&mut child, Duration::from_secs(5)) {
            return Ok(());
        }
        let _ = child.kill();
        let _ = child.wait();
        Ok(())
    }

    /// Kills QEMU with SIGKILL and reaps it: a power cut for the guest, whose memory (its
    /// page cache included) is gone. What survives on the disk depends on
    /// [`VmOptions::disk_cache`]. Idempotent.
    pub fn kill(&mut self) -> Result<(), BootError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        child.kill().map_err(io_err(&self.stderr_log))?;
        child.wait().map_err(io_err(&self.stderr_log))?;
        Ok(())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Prefix of the private directory of a running guest (QMP socket, logs), pid-tagged so a
/// later run removes the ones a killed mailbake left.
pub(crate) const VM_DIR_PREFIX: &str = "mailbake-vm-";

/// Polls `child` until it exits or `timeout` passes; true when it exited (and was reaped).
fn wait_timeout(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        sleep(Duration::from_millis(100));
    }
    false
}

/// Sends `quit` over QMP: read greeting, negotiate capabilities, quit.
fn qmp_quit(path: &Path) -> Result<(), BootError> {
    let err = |reason: String| BootError::Qmp {
        path: path.to_path_buf(),
        reason,
    };
    let stream = UnixStream::connect(path).map_err(|e| err(e.to_string()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| err(e.to_string()))?;
    let mut writer = stream.try_clone().map_err(|e| err(e.to_string()))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| err(format!("greeting: {e}")))?;
    writer
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .map_err(|e| err(e.to_string()))?;
    line.clear();
    reader
        .read_line(&mut line)
        .map_err(|e| err(format!("capabilities: {e}")))?;
    writer
        .write_all(b"{\"execute\":\"quit\"}\n")
        .map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// One attempt at reading an SMTP greeting; `Some(line)` if it starts with `220`.
fn smtp_greeting(addr: SocketAddr) -> Option<String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if line.starts_with("220") {
        let _ = (&stream).write_all(b"QUIT\r\n");
        Some(line.trim_end().to_string())
    } else {
        None
    }
}

/// QEMU splits `-drive` options on commas; a comma in a path is written as `,,`.
fn qemu_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// The `-netdev` argument and the forwarded ports (none on a tap).
fn netdev(opts: &VmOptions) -> Result<(String, Vec<(u16, SocketAddr)>), BootError> {
    match &opts.network {
        Network::User => {
            let forwards = host_ports(opts)?;
            // Both named: naming only `ipv6=on` makes QEMU turn IPv4 off (no DHCP lease, no
            // forwards).
            let mut netdev = String::from("user,id=net0,ipv4=on,ipv6=on");
            let guest_addr = match &opts.user_net {
                Some(layout) => {
                    netdev.push_str(&layout.netdev_options());
                    layout.guest.to_string()
                }
                None => String::new(),
            };
            for (guest, host) in &forwards {
                netdev.push_str(&format!(
                    ",hostfwd=tcp:{}:{}-{guest_addr}:{guest}",
                    host.ip(),
                    host.port()
                ));
            }
            Ok((netdev, forwards))
        }
        Network::Tap { ifname } => Ok((
            format!(
                "tap,id=net0,ifname={},script=no,downscript=no",
                ifname.replace(',', ",,")
            ),
            Vec::new(),
        )),
    }
}

/// Picks the loopback host port for each guest port.
fn host_ports(opts: &VmOptions) -> Result<Vec<(u16, SocketAddr)>, BootError> {
    let lo = Ipv4Addr::LOCALHOST;
    if let Some(base) = opts.forward_base {
        let count = opts.guest_ports.len();
        let mut out = Vec::new();
        for (i, g) in opts.guest_ports.iter().enumerate() {
            let port = u16::try_from(usize::from(base) + i)
                .map_err(|_| BootError::PortRange { base, count })?;
            out.push((*g, SocketAddr::from((lo, port))));
        }
        return Ok(out);
    }
    // Ask the kernel for free ports, holding every listener until all are chosen so the same
    // port is not handed out twice; QEMU binds them right after (a small, accepted race).
    let listeners: Vec<TcpListener> = opts
        .guest_ports
        .iter()
        .map(|_| TcpListener::bind((lo, 0)))
        .collect::<Result<_, _>>()
        .map_err(BootError::NoPort)?;
    opts.guest_ports
        .iter()
        .zip(&listeners)
        .map(|(g, l)| l.local_addr().map(|a| (*g, a)).map_err(BootError::NoPort))
        .collect()
}
