//! End-to-end test of the `image` and `boot` stages on the Debian 12 test base:
//! build the base (cached), bake an overlay into a disk twice and compare digests, then boot
//! it through SeaBIOS and mailbake's own GRUB under TCG until the root is mounted. (The full
//! boot of an image, with its seed, to SMTP, is `tests/boot_cli.rs`'s, through `mailbake boot`
//! on the base disk; the mail flow tests boot that image on their test network.)
//!
//! Slow (a minute or two) and needs root, mmdebstrap, e2fsprogs, grub-common, qemu-utils and
//! qemu-system-x86. It never skips: a
//! missing piece fails with the reason.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mailbake::boot::{Vm, VmOptions};

const SDE: u64 = 1_700_000_000;
const MOTD_MARKER: &str = "MAILBAKE-MOTD-MARKER-7f3a";
const CONSOLE_MARKER: &str = "MAILBAKE-OVERLAY-MARKER-7f3a";

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

/// A tiny overlay: a motd marker and an early unit that prints the root's filesystem type and
/// the motd on the console.
fn make_overlay(path: &Path) {
    let mut b = tar::Builder::new(fs::File::create(path).expect("create overlay"));
    overlay_entries(&mut b);
    b.into_inner()
        .and_then(|mut f| f.flush())
        .expect("finish overlay");
}

fn overlay_entries(b: &mut tar::Builder<fs::File>) {
    add_dir(b, "etc");
    add_file(b, "etc/motd", 0o644, format!("{MOTD_MARKER}\n").as_bytes());
    for d in [
        "etc/systemd",
        "etc/systemd/system",
        "etc/systemd/system/sysinit.target.wants",
    ] {
        add_dir(b, d);
    }
    // Early (sysinit, right after the root and local filesystems are mounted), so the boot
    // can stop there: the overlay's files are in the root, and the root is the disk's ext4.
    add_file(
        b,
        "etc/systemd/system/mb-marker.service",
        0o644,
        format!(
            "[Unit]\nDescription=mailbake overlay marker\nDefaultDependencies=no\n\
             After=local-fs.target\n[Service]\nType=oneshot\n\
             ExecStart=/bin/sh -c 'echo \"{CONSOLE_MARKER} root=$$(findmnt -no FSTYPE /) \
             motd=$$(head -c 100 /etc/motd) {CONSOLE_MARKER}-END\"'\n\
             StandardOutput=journal+console\n\
             [Install]\nWantedBy=sysinit.target\n"
        )
        .as_bytes(),
    );
    add_symlink(
        b,
        "etc/systemd/system/sysinit.target.wants/mb-marker.service",
        "../mb-marker.service",
    );
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
fn image_is_reproducible_and_boots_through_seabios_and_its_own_grub() {
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

    // The root tarball's disk boots mailbake's own GRUB, which no other test boots (they use
    // the base disk and its GRUB): boot it until the overlay's early unit reports the root.
    let mut opts = VmOptions::new(work.path().join("a/disk.qcow2"));
    opts.serial_log = Some(work.path().join("serial.log"));
    let mut vm = Vm::start(&opts).expect("start QEMU");
    let boot_timeout = Duration::from_secs(600);
    let t_grub = vm
        .wait_for_serial("mailbake-grub: loading Linux", boot_timeout)
        .expect("GRUB did not run from the disk");
    let t_kernel = vm
        .wait_for_serial("Linux version", boot_timeout)
        .expect("the kernel did not start");
    // The unit's line, once complete: the root's filesystem and the overlay's motd.
    let t_marker = vm
        .wait_for_serial(&format!("{CONSOLE_MARKER}-END"), boot_timeout)
        .expect("the overlay's unit did not run");
    let serial = vm.serial_text();
    let line = serial
        .lines()
        .find(|l| l.contains(&format!("{CONSOLE_MARKER} root=")))
        .unwrap_or_default()
        .to_string();
    vm.shutdown().expect("stop QEMU");
    assert!(
        line.contains("root=ext4"),
        "root is not the ext4 partition: {line}"
    );
    assert!(
        line.contains(&format!("motd={MOTD_MARKER}")),
        "the overlay's /etc/motd is not in the root: {line}"
    );
    eprintln!(
        "boot under TCG: grub {:.0} s, kernel {:.0} s, overlay unit {:.0} s",
        t_grub.as_secs_f64(),
        t_kernel.as_secs_f64(),
        t_marker.as_secs_f64()
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

// ----- The base is a disk (Ubuntu's `.img`, here its stand-in): boot chain and files kept -----

/// The test overlay, plus what the disk path must handle: an entry below a symlinked parent
/// (`lib -> usr/lib`), a base file it replaces (`etc/motd`, which `make_overlay` writes).
fn make_disk_overlay(path: &Path) {
    let mut b = tar::Builder::new(fs::File::create(path).expect("create overlay"));
    overlay_entries(&mut b);
    add_dir(&mut b, "lib");
    add_dir(&mut b, "lib/mailbake-test");
    add_file(
        &mut b,
        "lib/mailbake-test/marker",
        0o600,
        b"below a symlink\n",
    );
    // A new name at the root of the filesystem.
    add_symlink(&mut b, "mailbake-test", "usr/lib/mailbake-test");
    b.finish().expect("finish overlay");
}

/// `mailbake image` on a base disk with its sha256, as `user` (`None`: root), umask and TZ,
/// into `dir`; returns the output (raw, to look inside) and its sha256.
fn bake_disk(
    base: &Path,
    overlay: &Path,
    dir: &Path,
    as_nobody: bool,
    extra: &[&str],
) -> (PathBuf, String) {
    fs::create_dir_all(dir).expect("out dir");
    let out = dir.join("disk.raw");
    let base_sha = mailbake::image::digest(base).expect("digest of the base");
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        c.arg(env!("CARGO_BIN_EXE_mailbake"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_mailbake"))
    };
    cmd.args(["image", "--format", "raw", "--base"])
        .arg(base)
        .args(["--base-sha256", &base_sha, "--overlay"])
        .arg(overlay)
        .arg("--out")
        .arg(&out)
        .args(extra)
        .env("TZ", if as_nobody { "Asia/Tokyo" } else { "UTC" })
        .env("SOURCE_DATE_EPOCH", SDE.to_string());
    let t = Instant::now();
    let stdout = run(&mut cmd);
    eprintln!(
        "image in {} ({}): {:.1} s\n{stdout}",
        dir.display(),
        if as_nobody { "uid 65534" } else { "root" },
        t.elapsed().as_secs_f64()
    );
    let sha = mailbake::image::digest(&out).expect("digest of the image");
    (out, sha)
}

/// The partitions of a raw disk, and the byte offset of the one numbered `n`.
fn partitions(disk: &Path) -> Vec<mailbake::image::base_disk::partitions::Partition> {
    mailbake::image::base_disk::partitions::read(disk).expect("partition table")
}

fn offset_of(disk: &Path, n: u32) -> u64 {
    partitions(disk)
        .into_iter()
        .find(|p| p.number == n)
        .unwrap_or_else(|| panic!("no partition {n} on {}", disk.display()))
        .start
}

/// `debugfs -R REQUEST` on the filesystem at `offset` of `disk`.
fn debugfs(disk: &Path, offset: u64, request: &str) -> String {
    run(Command::new("debugfs")
        .args(["-R", request])
        .arg(format!("{}?offset={offset}", disk.display())))
}

/// sha256 of `len` bytes of `disk` from `start`.
fn range_digest(disk: &Path, start: u64, len: u64) -> String {
    use sha2::Digest;
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::File::open(disk).expect("open disk");
    f.seek(SeekFrom::Start(start)).expect("seek");
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f.take(len), &mut h).expect("read range");
    hex::encode(h.finalize())
}

#[test]
fn a_base_disk_keeps_its_boot_chain_and_files_takes_the_overlay_and_needs_no_root() {
    let (standin, _) = testkit::guest::base_disk();
    let work = tempfile::tempdir().expect("tempdir");
    // Readable by an unprivileged user: the build must need no root.
    fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let base = work.path().join("base.qcow2");
    fs::copy(&standin, &base).expect("copy the stand-in");
    let overlay = work.path().join("overlay.tar");
    make_disk_overlay(&overlay);
    let base_raw = work.path().join("base.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&base)
        .arg(&base_raw));

    let (a, sha_a) = bake_disk(&base, &overlay, &work.path().join("a"), false, &[]);
    let b_dir = work.path().join("b");
    fs::create_dir(&b_dir).expect("b");
    fs::set_permissions(&b_dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let (_, sha_b) = bake_disk(&base, &overlay, &b_dir, true, &[]);
    eprintln!("disk-path digests:\n  a {sha_a}\n  b {sha_b}");
    assert_eq!(
        sha_a, sha_b,
        "two builds (root, TZ=UTC; uid 65534, TZ=Asia/Tokyo) differ"
    );

    // The partition table and the two boot partitions are the base's, byte for byte.
    let sfdisk = |d: &Path| {
        run(Command::new("sfdisk").arg("-d").arg(d)).replace(&d.display().to_string(), "DISK")
    };
    assert_eq!(sfdisk(&base_raw), sfdisk(&a), "the partition table changed");
    for p in partitions(&base_raw).iter().filter(|p| p.number != 1) {
        assert_eq!(
            range_digest(&base_raw, p.start, p.size),
            range_digest(&a, p.start, p.size),
            "partition {} (BIOS boot or ESP) changed",
            p.number
        );
    }
    assert_eq!(
        range_digest(&base_raw, 0, 512),
        range_digest(&a, 0, 512),
        "the boot sector changed"
    );

    // The base's own files, where the overlay does not reach, keep their inodes whole:
    // a capability (xattr), a device node, a hard link, grub.cfg.
    let (b_off, a_off) = (offset_of(&base_raw, 1), offset_of(&a, 1));
    for request in [
        "stat /usr/bin/ping",
        "ea_list /usr/bin/ping",
        "stat /dev/null",
        "stat /usr/bin/perl5.36.0",
        "stat /boot/grub/grub.cfg",
        "stat /etc/fstab",
    ] {
        let before = debugfs(&base_raw, b_off, request);
        assert!(
            before.contains("Inode:") || before.contains("security."),
            "`{request}` on the base: {before:?}"
        );
        assert_eq!(
            before,
            debugfs(&a, a_off, request),
            "`{request}` differs between the base and the image"
        );
    }
    let caps = debugfs(&a, a_off, "ea_list /usr/bin/ping");
    assert!(caps.contains("security.capability"), "{caps}");
    assert!(debugfs(&a, a_off, "stat /usr/bin/perl").contains("Links: 2"));

    // The overlay's entries: a replaced file, one below the `lib -> usr/lib` symlink (which
    // stays a symlink), with their owners and modes.
    assert!(debugfs(&a, a_off, "cat /etc/motd").contains(MOTD_MARKER));
    assert!(debugfs(&a, a_off, "stat /lib").contains("Type: symlink"));
    assert!(
        debugfs(&a, a_off, "stat /mailbake-test")
            .contains("Fast link dest: \"usr/lib/mailbake-test\""),
        "the new symlink at the root is missing"
    );
    let marker = debugfs(&a, a_off, "stat /usr/lib/mailbake-test/marker");
    assert!(marker.contains("Mode:  0600"), "{marker}");
    assert!(
        debugfs(&a, a_off, "cat /usr/lib/mailbake-test/marker").contains("below a symlink"),
        "the entry below lib/ is not in usr/lib/"
    );
    run(Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset={a_off}", a.display())));
}

/// A small GPT disk shaped like Ubuntu's (14, 15, then 1 over the rest) whose partition 1
/// holds an ext4 filesystem labelled `label` of `root_mib` MiB with a kernel in /boot.
fn small_disk(dir: &Path, label: &str, root_mib: u64) -> PathBuf {
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("boot")).expect("tree");
    fs::create_dir_all(tree.join("etc")).expect("tree");
    fs::write(tree.join("boot/vmlinuz-1.0"), b"kernel").expect("kernel");
    fs::write(tree.join("boot/initrd.img-1.0"), b"initrd").expect("initrd");
    let root = dir.join("root.ext4");
    run(Command::new("mke2fs")
        .args(["-q", "-t", "ext4", "-L", label, "-d"])
        .arg(&tree)
        .arg(&root)
        .arg(format!("{root_mib}M"))
        .env("E2FSPROGS_FAKE_TIME", SDE.to_string()));
    let disk = dir.join("small.img");
    let f = fs::File::create(&disk).expect("disk");
    f.set_len((1 + 4 + 8 + root_mib + 1) << 20).expect("size");
    drop(f);
    run(Command::new("sgdisk")
        .args(["--new=14::+4M", "--new=15::+8M", "--new=1::"])
        .args(["--typecode=14:EF02", "--typecode=15:EF00"])
        .arg(&disk));
    let start = offset_of(&disk, 1);
    run(Command::new("dd")
        .arg(format!("if={}", root.display()))
        .arg(format!("of={}", disk.display()))
        .args(["bs=1M", "conv=notrunc", "status=none"])
        .arg(format!("seek={}", start >> 20)));
    disk
}

/// A tarball whose only entry is one file of `mib` MiB.
fn overlay_with_a_file_of(path: &Path, mib: usize) {
    let mut b = tar::Builder::new(fs::File::create(path).expect("create overlay"));
    add_dir(&mut b, "etc");
    add_file(&mut b, "etc/big", 0o644, &vec![0x5a; mib << 20]);
    b.finish().expect("finish overlay");
}

#[test]
fn a_base_disk_too_small_for_the_overlay_grows_its_root_and_size_only_grows_it() {
    let work = tempfile::tempdir().expect("tempdir");
    let base = small_disk(work.path(), "cloudimg-rootfs", 16);
    let overlay = work.path().join("overlay.tar");
    overlay_with_a_file_of(&overlay, 24);

    let (a, sha_a) = bake_disk(&base, &overlay, &work.path().join("a"), false, &[]);
    let (_, sha_b) = bake_disk(&base, &overlay, &work.path().join("b"), false, &[]);
    assert_eq!(sha_a, sha_b, "the grown disk is not reproducible");
    let before = partitions(&base);
    let after = partitions(&a);
    let root = |ps: &[mailbake::image::base_disk::partitions::Partition]| {
        ps.iter()
            .find(|p| p.number == 1)
            .cloned()
            .expect("partition 1")
    };
    assert_eq!(
        root(&before).start,
        root(&after).start,
        "the root partition moved"
    );
    assert!(
        root(&after).size >= (24 << 20) + mailbake::image::base_disk::HEADROOM,
        "partition 1 did not grow enough: {:?} -> {:?}",
        root(&before),
        root(&after)
    );
    let off = root(&after).start;
    run(Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset={off}", a.display())));
    let stats = debugfs(&a, off, "stat /etc/big");
    assert!(stats.contains("Size: 25165824"), "{stats}");

    // --size smaller than the disk changes nothing; larger grows it to that size.
    let (_, sha_c) = bake_disk(
        &base,
        &overlay,
        &work.path().join("c"),
        false,
        &["--size", "8M"],
    );
    assert_eq!(
        sha_c, sha_a,
        "--size below the needed size changed the disk"
    );
    let (d, _) = bake_disk(
        &base,
        &overlay,
        &work.path().join("d"),
        false,
        &["--size", "256M"],
    );
    assert_eq!(fs::metadata(&d).expect("d").len(), 256 << 20);
}

/// `mailbake image` of `base` (pinned by its own digest) with a small overlay, which must
/// fail with exit 1, write nothing and offer a fix; returns its error text.
fn refused_image(dir: &Path, base: &Path) -> String {
    let overlay = dir.join("overlay.tar");
    overlay_with_a_file_of(&overlay, 1);
    let out_dir = dir.join("out");
    fs::create_dir(&out_dir).expect("out");
    let out = Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .args(["image", "--base"])
        .arg(base)
        .args([
            "--base-sha256",
            &mailbake::image::digest(base).expect("digest"),
        ])
        .arg("--overlay")
        .arg(&overlay)
        .arg("--out")
        .arg(out_dir.join("x.qcow2"))
        .output()
        .expect("run mailbake");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("fix:"), "{err}");
    assert_eq!(
        fs::read_dir(&out_dir).expect("out").count(),
        0,
        "something was written: {err}"
    );
    err
}

#[test]
fn a_disk_without_the_root_label_is_refused_naming_its_partitions() {
    let work = tempfile::tempdir().expect("tempdir");
    let base = small_disk(work.path(), "something-else", 8);
    let err = refused_image(work.path(), &base);
    assert!(
        err.contains("0 partitions hold an ext4 filesystem labelled `cloudimg-rootfs`"),
        "{err}"
    );
    assert!(err.contains("1: ext label \"something-else\""), "{err}");
    assert!(err.contains("fix:"), "{err}");
}

#[test]
fn a_root_tarball_without_a_kernel_is_refused_naming_the_disk_image_to_use() {
    assert!(testkit::is_root(), "a root tarball is extracted as root");
    let work = tempfile::tempdir().expect("tempdir");
    // What Ubuntu's -root.tar.xz is: a root tree without /boot/vmlinuz-*.
    let base = work
        .path()
        .join("ubuntu-22.04-server-cloudimg-amd64-root.tar");
    {
        let mut b = tar::Builder::new(fs::File::create(&base).expect("create"));
        add_dir(&mut b, "etc");
        add_file(&mut b, "etc/os-release", 0o644, b"NAME=\"Ubuntu\"\n");
        add_dir(&mut b, "boot");
        b.finish().expect("finish");
    }
    let err = refused_image(work.path(), &base);
    eprintln!("{err}");
    assert!(err.contains("a root tarball with no kernel"), "{err}");
    assert!(
        err.contains("--base ubuntu-22.04-server-cloudimg-amd64.img"),
        "{err}"
    );
}
