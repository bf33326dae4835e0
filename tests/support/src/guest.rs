//! A booted image on the test network: QEMU (TCG) started inside the namespace on a tap of its
//! bridge, with no user network, configured only by its seed; SSH and probes reach it at the
//! site's address from inside the namespace.
//!
//! Also the steps every boot test takes before booting: the cached Debian 12 test base, the
//! disk image `mailbake image` makes from it, and a writable layer over that image.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mailbake::boot::{DiskCache, Network, Vm, VmOptions};

use crate::netns::Netns;
use crate::topology::GUEST4;
use crate::{mailbake, probe_in, run};

/// The guest's tap device in the namespace.
pub const TAP: &str = "tap0";
/// The operator account the seed creates.
pub const OPERATOR: &str = "admin";

/// How to boot a [`Guest`].
pub struct GuestOptions<'a> {
    pub disk: &'a Path,
    pub seed: &'a Path,
    pub ssh_key: &'a Path,
    pub serial_log: PathBuf,
    /// Units whose journal is shown as evidence when something fails.
    pub journal_units: &'a [&'a str],
}

/// What a failing phase shows about the guest: cheap to clone, usable while the guest itself
/// is borrowed elsewhere.
#[derive(Clone)]
pub struct EvidenceSource {
    net: Netns,
    ssh_key: PathBuf,
    serial_log: PathBuf,
    units: Vec<String>,
}

impl EvidenceSource {
    /// The last serial console lines and the journal of the watched units (if SSH answers).
    pub fn collect(&self) -> String {
        let serial = fs::read(&self.serial_log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let tail: Vec<&str> = serial.lines().rev().take(60).collect();
        let mut units = String::new();
        for u in &self.units {
            units.push_str(&format!(" -u {u}"));
        }
        let journal = ssh_command(
            &self.net,
            &self.ssh_key,
            &format!("sudo journalctl -b --no-pager -o short-monotonic{units} | tail -80"),
            30,
        )
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
        format!(
            "--- guest journal ({}) ---\n{journal}\n--- last serial lines ({}) ---\n{}",
            self.units.join(", "),
            self.serial_log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

/// A running guest; dropping it stops QEMU.
pub struct Guest {
    pub vm: Vm,
    net: Netns,
    evidence: EvidenceSource,
}

impl Guest {
    /// Boots `disk` with `seed` on the namespace's bridge (creating the tap on first use).
    pub fn boot(net: &Netns, opts: &GuestOptions) -> Guest {
        Guest::boot_with_cache(net, opts, DiskCache::Unsafe)
    }

    /// [`Guest::boot`] with the disk cached as `cache` says: [`DiskCache::Writeback`] for a
    /// guest that will lose its power ([`Guest::power_cut`]), so that what it flushed is on
    /// the disk when it boots again.
    pub fn boot_with_cache(net: &Netns, opts: &GuestOptions, cache: DiskCache) -> Guest {
        Guest::boot_configured(net, opts, |vm| vm.disk_cache = cache)
    }

    /// [`Guest::boot`] with QEMU's options changed by `configure` after the harness set them
    /// (e.g. the disk on virtio-scsi, as a provider attaches it).
    pub fn boot_configured(
        net: &Netns,
        opts: &GuestOptions,
        configure: impl FnOnce(&mut VmOptions),
    ) -> Guest {
        if net.ip(&["link", "show", TAP]).is_err() {
            net.add_tap(TAP)
                .unwrap_or_else(|e| panic!("cannot add the guest's tap: {e}"));
        }
        let mut vm_opts = VmOptions::new(opts.disk);
        vm_opts.seed = Some(opts.seed.to_path_buf());
        vm_opts.serial_log = Some(opts.serial_log.clone());
        vm_opts.memory_mib = 1536;
        // The disk is a throw-away layer over the built image; guest writes stay in it so a
        // later boot sees them (queue, installed secrets).
        vm_opts.snapshot = false;
        vm_opts.network = Network::Tap { ifname: TAP.into() };
        vm_opts.netns = Some(net.name().to_string());
        configure(&mut vm_opts);
        let vm = Vm::start(&vm_opts).unwrap_or_else(|e| panic!("QEMU does not start: {e}"));
        Guest {
            vm,
            net: net.clone(),
            evidence: EvidenceSource {
                net: net.clone(),
                ssh_key: opts.ssh_key.to_path_buf(),
                serial_log: opts.serial_log.clone(),
                units: opts.journal_units.iter().map(|u| u.to_string()).collect(),
            },
        }
    }

    pub fn evidence_source(&self) -> EvidenceSource {
        self.evidence.clone()
    }

    pub fn evidence(&self) -> String {
        self.evidence.collect()
    }

    /// QEMU's command line as the kernel has it (`/proc/PID/cmdline`).
    pub fn qemu_command_line(&self) -> Vec<String> {
        let pid = self.vm.pid().expect("QEMU runs");
        let raw = fs::read(format!("/proc/{pid}/cmdline")).expect("QEMU's cmdline");
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    /// Waits until port 25 answers with a `220` greeting at the guest's address (probed from
    /// inside the namespace); returns the time since QEMU started.
    pub fn wait_for_smtp(&mut self, timeout: Duration) -> Duration {
        let deadline = Instant::now() + timeout;
        loop {
            assert!(
                self.vm.is_running(),
                "QEMU stopped while waiting for SMTP\n{}",
                self.evidence()
            );
            if let Ok(b) = probe_in(&self.net, &["--timeout", "5", "banner", GUEST4, "25"])
                && b["code"] == 220
            {
                let took = self.vm.elapsed();
                eprintln!(
                    "guest: SMTP answered after {:.0} s: {}",
                    took.as_secs_f64(),
                    b["line"]
                );
                return took;
            }
            assert!(
                Instant::now() < deadline,
                "SMTP on {GUEST4}:25 never answered within {timeout:?}\n{}",
                self.evidence()
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// One SSH attempt running `command` as the operator; ssh's own failures exit 255.
    pub fn try_ssh(&self, command: &str) -> Output {
        ssh_command(&self.net, &self.evidence.ssh_key, command, 600)
            .output()
            .expect("ssh runs")
    }

    /// Runs `command` in the guest as the operator with `input` as its standard input (to
    /// install a file: `sudo tee PATH`); panics with the evidence if it fails. SSH must be up.
    pub fn ssh_with_stdin(&self, command: &str, input: &[u8]) -> String {
        let mut child = ssh_command(&self.net, &self.evidence.ssh_key, command, 120)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ssh runs");
        if let Some(mut stdin) = child.stdin.take() {
            // A command that exits early closes its stdin; its status says why.
            let _ = stdin.write_all(input);
        }
        let out = child.wait_with_output().expect("ssh runs");
        assert!(
            out.status.success(),
            "in the guest, `{command}` (with {} bytes of input) failed ({}):\n{}{}\n{}",
            input.len(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.evidence()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `command` in the guest as the operator; panics with the evidence if it fails.
    /// Retries while SSH itself is not up yet (exit 255), for up to 5 minutes.
    pub fn ssh(&self, command: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let out = self.try_ssh(command);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            if out.status.code() != Some(255) || Instant::now() > deadline {
                panic!(
                    "in the guest, `{command}` failed ({}):\n{}{}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    self.evidence()
                );
            }
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    /// Waits until cloud-init and the boot are finished, so later checks see the final state.
    pub fn wait_booted(&self) {
        self.ssh("cloud-init status --wait >/dev/null; systemctl is-system-running --wait >/dev/null || true");
    }

    /// Reboots the guest and waits until SSH answers from the new boot.
    pub fn reboot(&self) {
        self.reboot_then(|| {});
    }

    /// Reboots the guest, runs `while_down` once the reboot is under way (the old boot's
    /// services are stopping, the new boot's have not started: e.g. bring a receiver back so
    /// the first delivery attempt of the new boot finds it), and waits until SSH answers
    /// from the new boot.
    pub fn reboot_then(&self, while_down: impl FnOnce()) {
        let boot_id = self.ssh("cat /proc/sys/kernel/random/boot_id");
        let _ = self.try_ssh("sudo systemctl reboot");
        while_down();
        let deadline = Instant::now() + Duration::from_secs(600);
        while Instant::now() < deadline {
            let out = self.try_ssh("cat /proc/sys/kernel/random/boot_id");
            if out.status.success() && String::from_utf8_lossy(&out.stdout) != boot_id {
                return;
            }
            std::thread::sleep(Duration::from_secs(5));
        }
        panic!(
            "the guest did not come back from the reboot\n{}",
            self.evidence()
        );
    }

    /// Stops QEMU cleanly (QMP quit).
    pub fn shutdown(&mut self) {
        self.vm
            .shutdown()
            .unwrap_or_else(|e| panic!("QEMU does not stop: {e}"));
    }

    /// Kills QEMU at once (SIGKILL): the guest loses its power and its memory.
    pub fn power_cut(&mut self) {
        self.vm
            .kill()
            .unwrap_or_else(|e| panic!("QEMU cannot be killed: {e}"));
    }
}

/// `ssh` to the guest's address from inside the namespace, ready to run `command`:
/// non-interactive, host keys not recorded (they change when a seed is applied), dead servers
/// noticed within 30 s, and `timeout` ending the command after `limit` seconds (exit 124).
fn ssh_command(net: &Netns, key: &Path, command: &str, limit: u32) -> Command {
    let mut cmd = net.command("timeout");
    cmd.arg(limit.to_string())
        .args(["ssh", "-q", "-o", "BatchMode=yes"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "ConnectTimeout=10"])
        .args([
            "-o",
            "ServerAliveInterval=10",
            "-o",
            "ServerAliveCountMax=3",
        ])
        .arg("-i")
        .arg(key)
        .arg(format!("{OPERATOR}@{GUEST4}"))
        .arg(command);
    cmd
}

/// Builds (or reuses) the cached Debian 12 test base; returns its path.
pub fn base_tarball() -> PathBuf {
    let out = run(Command::new("bash").arg(crate::repo().join("qemu-tests/base/build.sh")));
    PathBuf::from(out.trim())
}

/// `mailbake image` of `overlay` on the test base into `image` (qcow2).
pub fn build_image(overlay: &Path, image: &Path) {
    let base = base_tarball();
    let digest = mailbake::image::digest(&base)
        .unwrap_or_else(|e| panic!("digest of {}: {e}", base.display()));
    let t = Instant::now();
    mailbake(&[
        "image",
        "--base",
        &base.display().to_string(),
        "--base-sha256",
        &digest,
        "--overlay",
        &overlay.display().to_string(),
        "--out",
        &image.display().to_string(),
    ]);
    eprintln!(
        "image: built in {:.0} s, {} bytes",
        t.elapsed().as_secs_f64(),
        fs::metadata(image).map(|m| m.len()).unwrap_or(0)
    );
}

/// A writable qcow2 layer `disk` over `image`, kept across the boots of one test.
pub fn writable_layer(image: &Path, disk: &Path) {
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(image)
        .arg(disk));
}
