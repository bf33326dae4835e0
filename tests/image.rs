//! End-to-end test of the `image` and `boot` stages on the Debian 12 test base:
//! build the base (cached), bake an overlay into a disk twice and compare digests, then boot
//! it through SeaBIOS + GRUB under TCG with a NoCloud seed and check from the outside.
//!
//! Slow (several minutes, most of it the TCG boot) and needs root, mmdebstrap, e2fsprogs,
//! grub-common, qemu-utils, qemu-system-x86, xorriso and openssh-client. It never skips: a
//! missing piece fails with the reason.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mailbake::boot::{Vm, VmOptions};

const SDE: u64 = 1_700_000_000;
const HOSTNAME: &str = "mbtest";
const MOTD_MARKER: &str = "MAILBAKE-MOTD-MARKER-7f3a";
const CONSOLE_MARKER: &str = "MAILBAKE-OVERLAY-MARKER-7f3a";
const SMTP_BANNER: &str = "220 mbtest ESMTP mailbake-test-banner";

use testkit::{repo, run};

/// Builds (or reuses) the cached Debian 12 base; returns its path.
fn base_tarball() -> PathBuf {
    let t = Instant::now();
    let out = Command::new("bash")
        .arg(repo().join("qemu-tests/base/build.sh"))
        .output()
        .expect("cannot run bash qemu-tests/base/build.sh");
    assert!(
        out.status.success(),
        "the test base could not be built, so the image cannot be tested:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    eprintln!(
        "base: {} ({:.1} s)",
        path.display(),
        t.elapsed().as_secs_f64()
    );
    path
}

fn add_file(b: &mut tar::Builder<fs::File>, path: &str, mode: u32, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(SDE);
    b.append_data(&mut h, path, data).expect("append file");
}

fn add_dir(b: &mut tar::Builder<fs::File>, path: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(SDE);
    b.append_data(&mut h, path, std::io::empty())
        .expect("append dir");
}

fn add_symlink(b: &mut tar::Builder<fs::File>, path: &str, target: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(SDE);
    b.append_link(&mut h, path, target).expect("append symlink");
}

/// A tiny overlay: a motd marker, a unit that prints a marker on the console, and a
/// socket-activated stand-in for an SMTP server so `wait_for_smtp` has a banner to find.
fn make_overlay(path: &Path) {
    let mut b = tar::Builder::new(fs::File::create(path).expect("create overlay"));
    add_dir(&mut b, "etc");
    add_file(
        &mut b,
        "etc/motd",
        0o644,
        format!("{MOTD_MARKER}\n").as_bytes(),
    );
    for d in [
        "etc/systemd",
        "etc/systemd/system",
        "etc/systemd/system/multi-user.target.wants",
        "etc/systemd/system/sockets.target.wants",
    ] {
        add_dir(&mut b, d);
    }
    add_file(
        &mut b,
        "etc/systemd/system/mb-marker.service",
        0o644,
        format!(
            "[Unit]\nDescription=mailbake overlay marker\n[Service]\nType=oneshot\n\
             ExecStart=/bin/echo {CONSOLE_MARKER}\nStandardOutput=journal+console\n\
             [Install]\nWantedBy=multi-user.target\n"
        )
        .as_bytes(),
    );
    add_symlink(
        &mut b,
        "etc/systemd/system/multi-user.target.wants/mb-marker.service",
        "../mb-marker.service",
    );
    add_file(
        &mut b,
        "etc/systemd/system/mb-smtp.socket",
        0o644,
        b"[Unit]\nDescription=test SMTP banner\n[Socket]\nListenStream=25\nAccept=yes\n\
          [Install]\nWantedBy=sockets.target\n",
    );
    add_file(
        &mut b,
        "etc/systemd/system/mb-smtp@.service",
        0o644,
        format!(
            "[Unit]\nDescription=test SMTP banner\n[Service]\n\
             ExecStart=/bin/echo \"{SMTP_BANNER}\"\nStandardInput=socket\nStandardOutput=socket\n"
        )
        .as_bytes(),
    );
    add_symlink(
        &mut b,
        "etc/systemd/system/sockets.target.wants/mb-smtp.socket",
        "../mb-smtp.socket",
    );
    b.into_inner()
        .and_then(|mut f| f.flush())
        .expect("finish overlay");
}

/// A NoCloud seed ISO (label cidata) that sets the hostname and a user with the test's key.
fn make_seed(dir: &Path, pubkey: &str) -> PathBuf {
    let src = dir.join("seed");
    fs::create_dir_all(&src).expect("seed dir");
    fs::write(
        src.join("meta-data"),
        format!("instance-id: mbtest-0001\nlocal-hostname: {HOSTNAME}\n"),
    )
    .expect("meta-data");
    fs::write(
        src.join("user-data"),
        format!(
            "#cloud-config\nhostname: {HOSTNAME}\nusers:\n  - name: tester\n    shell: /bin/bash\n    \
             sudo: ALL=(ALL) NOPASSWD:ALL\n    ssh_authorized_keys:\n      - {pubkey}\n"
        ),
    )
    .expect("user-data");
    let iso = dir.join("seed.iso");
    run(Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "cidata", "-J", "-R", "-o"])
        .arg(&iso)
        .arg(&src));
    iso
}

/// Runs `mailbake image` in `dir` with a given umask and TZ; returns the output's sha256.
fn bake(base: &Path, base_sha: &str, overlay: &Path, dir: &Path, umask: &str, tz: &str) -> String {
    fs::create_dir_all(dir).expect("out dir");
    let out = dir.join("disk.qcow2");
    let t = Instant::now();
    let stdout = run(Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_mailbake"))
        .args(["image", "--base"])
        .arg(base)
        .args(["--base-sha256", base_sha, "--overlay"])
        .arg(overlay)
        .arg("--out")
        .arg(&out)
        .env("TZ", tz)
        .env("SOURCE_DATE_EPOCH", SDE.to_string()));
    eprintln!(
        "image in {}: {:.1} s\n{stdout}",
        dir.display(),
        t.elapsed().as_secs_f64()
    );
    mailbake::image::digest(&out).expect("digest of the image")
}

#[test]
fn image_is_reproducible_and_boots_through_seabios_grub_with_seed() {
    let base = base_tarball();
    let base_sha = mailbake::image::digest(&base).expect("digest of the base");
    let work = tempfile::tempdir().expect("tempdir");
    let overlay = work.path().join("overlay.tar");
    make_overlay(&overlay);

    let a = bake(
        &base,
        &base_sha,
        &overlay,
        &work.path().join("a"),
        "022",
        "UTC",
    );
    let b = bake(
        &base,
        &base_sha,
        &overlay,
        &work.path().join("b"),
        "077",
        "Asia/Tokyo",
    );
    eprintln!("image digests:\n  a {a}\n  b {b}");
    assert_eq!(a, b, "two builds from the same inputs differ");
    // Only one copy is needed from here on.
    fs::remove_dir_all(work.path().join("b")).expect("remove second image");

    let key = work.path().join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "mailbake-test", "-f"])
        .arg(&key));
    let pubkey = fs::read_to_string(key.with_extension("pub")).expect("public key");
    let seed = make_seed(work.path(), pubkey.trim());

    let mut opts = VmOptions::new(work.path().join("a/disk.qcow2"));
    opts.seed = Some(seed);
    opts.serial_log = Some(work.path().join("serial.log"));
    let mut vm = Vm::start(&opts).expect("start QEMU");
    for (g, h) in vm.forwards() {
        eprintln!("forward guest {g} -> {h}");
    }
    let boot_timeout = Duration::from_secs(600);
    let t_grub = vm
        .wait_for_serial("mailbake-grub: loading Linux", boot_timeout)
        .expect("GRUB did not run from the disk");
    let t_kernel = vm
        .wait_for_serial("Linux version", boot_timeout)
        .expect("the kernel did not start");
    let t_ci = vm
        .wait_for_serial("Cloud-init v.", boot_timeout)
        .expect("cloud-init did not run");
    let t_marker = vm
        .wait_for_serial(CONSOLE_MARKER, boot_timeout)
        .expect("the overlay's unit did not run");
    let t_login = vm
        .wait_for_serial(&format!("{HOSTNAME} login:"), boot_timeout)
        .expect("no login prompt with the seed's hostname");
    let (t_smtp, banner) = vm.wait_for_smtp(boot_timeout).expect("no SMTP greeting");
    assert_eq!(banner, SMTP_BANNER);
    // cloud-init's closing line names the datasource it used.
    let t_ci_done = vm
        .wait_for_serial("Datasource DataSourceNoCloud", boot_timeout)
        .expect("cloud-init did not finish with the NoCloud seed");

    // SSH in with the key from the seed, through the loopback forward of guest port 22.
    let ssh_addr = vm.forwarded(22).expect("port 22 forwarded");
    let deadline = Instant::now() + Duration::from_secs(300);
    let output = loop {
        let out = Command::new("ssh")
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR"])
            // A session that dies silently while first boot restarts sshd must end, not hang.
            .args(["-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3", "-i"])
            .arg(&key)
            .args(["-p", &ssh_addr.port().to_string(), "tester@127.0.0.1"])
            .arg("hostname; cat /etc/motd; findmnt -no SOURCE,FSTYPE /; sudo -n true && echo SUDO-OK")
            .output()
            .expect("cannot run ssh");
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "ssh never succeeded: {}\n--- serial ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            vm.serial_text()
        );
        std::thread::sleep(Duration::from_secs(5));
    };
    let t_ssh = vm.elapsed();
    assert!(output.contains(HOSTNAME), "hostname not set: {output}");
    assert!(
        output.contains(MOTD_MARKER),
        "overlay motd missing: {output}"
    );
    assert!(
        output.contains("ext4"),
        "root is not the ext4 partition: {output}"
    );
    assert!(
        output.contains("SUDO-OK"),
        "seed user has no sudo: {output}"
    );
    vm.shutdown().expect("stop QEMU");
    eprintln!(
        "boot under TCG: grub {:.0} s, kernel {:.0} s, cloud-init {:.0} s, overlay unit {:.0} s, \
         login prompt {:.0} s, SMTP 220 {:.0} s, cloud-init done {:.0} s, ssh {:.0} s",
        t_grub.as_secs_f64(),
        t_kernel.as_secs_f64(),
        t_ci.as_secs_f64(),
        t_marker.as_secs_f64(),
        t_login.as_secs_f64(),
        t_smtp.as_secs_f64(),
        t_ci_done.as_secs_f64(),
        t_ssh.as_secs_f64()
    );
}

#[test]
fn wrong_base_digest_is_refused_before_anything_is_written() {
    let work = tempfile::tempdir().expect("tempdir");
    let base = work.path().join("base.tar");
    fs::write(&base, b"not really a tarball").expect("fake base");
    let overlay = work.path().join("overlay.tar");
    fs::write(&overlay, b"").expect("fake overlay");
    let out_dir = work.path().join("out");
    fs::create_dir(&out_dir).expect("out dir");
    let out = Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .args(["image", "--base"])
        .arg(&base)
        .args(["--base-sha256", &"ab".repeat(32), "--overlay"])
        .arg(&overlay)
        .arg("--out")
        .arg(out_dir.join("x.qcow2"))
        .output()
        .expect("run mailbake");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let actual = mailbake::image::digest(&base).expect("digest");
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(
        err.contains(&"ab".repeat(32)) && err.contains(&actual),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(&out_dir).expect("list out dir").count(),
        0,
        "something was written despite the mismatch"
    );
}
