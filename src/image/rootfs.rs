//! Merging the base and overlay tarballs into one root tree on disk, ready for `mke2fs -d`.
//!
//! Why a hand-written extractor instead of `tar::Entry::unpack_in`: the tree is a *foreign*
//! root. Absolute symlinks in it (`/etc/resolv.conf -> /run/...`, `/lib -> usr/lib`) must be
//! resolved against the tree, never the host, and device nodes (`/dev/null`) must become device
//! nodes, not empty files; `tar` resolves with host semantics and writes unknown kinds as files.
//!
//! What mke2fs copies from the tree: contents, numeric uid/gid, mode, xattrs, atime/mtime/ctime.
//! Ownership and modes come from the tar headers (hence root). Times: mtime = the entry's mtime
//! clamped to SOURCE_DATE_EPOCH, atime = mtime, set in [`Tree::finish`] after every write so
//! directory mtimes are not disturbed by their children being created. ctime cannot be set by
//! userspace; [`super::ext4`] rewrites it in the finished filesystem.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tar::EntryType;

use super::ImageError;

/// Longest chain of symlinks followed while resolving a parent path (Linux uses 40 too).
const MAX_SYMLINKS: usize = 40;

/// A root tree being assembled.
pub struct Tree {
    root: PathBuf,
    sde: i64,
    /// Clamped mtime of every path written from an archive, keyed by its resolved location
    /// relative to the root; paths created otherwise get SOURCE_DATE_EPOCH.
    mtimes: BTreeMap<PathBuf, i64>,
}

/// What [`Tree::add_boot_files`] chose.
#[derive(Debug, Clone)]
pub struct BootFiles {
    /// Kernel version, e.g. `6.1.0-50-amd64`.
    pub kernel: String,
}

/// Kind of compression, recognised by magic bytes rather than the file name so a renamed
/// download still works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

/// Detects the compression of `path` from its first bytes.
pub fn detect_compression(path: &Path) -> Result<Compression, ImageError> {
    let mut f = File::open(path).map_err(ImageError::io(path))?;
    let mut magic = [0u8; 6];
    let mut n = 0;
    while n < magic.len() {
        let r = f.read(&mut magic[n..]).map_err(ImageError::io(path))?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let m = &magic[..n];
    Ok(if m.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if m.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Compression::Xz
    } else if m.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    })
}

/// A decompressing reader. xz and zstd go through the `xz`/`zstd` tools (installed with the
/// rest of the host tools) rather than more crates; their exit status is checked at the end.
pub(crate) struct Input {
    pub(crate) reader: Box<dyn Read>,
    child: Option<(Child, &'static str)>,
}

impl Input {
    pub(crate) fn open(path: &Path) -> Result<Input, ImageError> {
        let comp = detect_compression(path)?;
        let file = File::open(path).map_err(ImageError::io(path))?;
        let tool = match comp {
            Compression::None => {
                return Ok(Input {
                    reader: Box::new(BufReader::with_capacity(1 << 20, file)),
                    child: None,
                });
            }
            Compression::Gzip => {
                return Ok(Input {
                    reader: Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
                    child: None,
                });
            }
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        };
        let mut child = Command::new(tool)
            .args(["-dc"])
            .stdin(file)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| ImageError::Tool {
                command: format!("{tool} -dc {}", path.display()),
                status: "could not start".into(),
                stderr: e.to_string(),
                fix: format!("install {tool} (apt-get install xz-utils zstd)"),
            })?;
        let stdout = child.stdout.take().ok_or_else(|| ImageError::Tool {
            command: format!("{tool} -dc"),
            status: "no stdout".into(),
            stderr: String::new(),
            fix: "retry".into(),
        })?;
        Ok(Input {
            reader: Box::new(BufReader::with_capacity(1 << 20, stdout)),
            child: Some((child, tool)),
        })
    }

    pub(crate) fn finish(self, path: &Path) -> Result<(), ImageError> {
        drop(self.reader);
        if let Some((mut child, tool)) = self.child {
            let status = child.wait().map_err(ImageError::io(path))?;
            if !status.success() {
                return Err(ImageError::Tool {
                    command: format!("{tool} -dc {}", path.display()),
                    status: status.to_string(),
                    stderr: "decompression failed (see above)".into(),
                    fix: "check that the file is complete and not corrupted".into(),
                });
            }
        }
        Ok(())
    }
}

fn cstr(path: &Path) -> Result<CString, ImageError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| ImageError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
    })
}

/// Normalises an archive path into plain components relative to the root. `None` for `..`
/// anywhere (refused: it could escape the tree).
fn archive_components(raw: &[u8]) -> Option<Vec<OsString>> {
    let mut out = Vec::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return None,
            Component::Normal(p) => out.push(p.to_os_string()),
        }
    }
    Some(out)
}

/// Owner, permission bits and clamped mtime of one archive entry.
struct Attrs {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

impl Attrs {
    /// The entry's attributes, its mtime clamped to `sde`.
    fn of(
        hdr: &tar::Header,
        sde: i64,
        bad: &dyn Fn(String) -> ImageError,
    ) -> Result<Attrs, ImageError> {
        let mode = hdr.mode().map_err(|e| bad(format!("bad mode: {e}")))? & 0o7777;
        let uid = hdr.uid().map_err(|e| bad(format!("bad uid: {e}")))?;
        let gid = hdr.gid().map_err(|e| bad(format!("bad gid: {e}")))?;
        let uid = u32::try_from(uid).map_err(|_| bad(format!("uid {uid} out of range")))?;
        let gid = u32::try_from(gid).map_err(|_| bad(format!("gid {gid} out of range")))?;
        let mtime = hdr.mtime().map_err(|e| bad(format!("bad mtime: {e}")))?;
        let mtime = i64::try_from(mtime).unwrap_or(i64::MAX).min(sde);
        Ok(Attrs {
            mode,
            uid,
            gid,
            mtime,
        })
    }

    /// Sets owner, then mode (chown clears set-uid/gid bits) on `path`, not following it.
    fn apply(&self, path: &Path) -> Result<(), ImageError> {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .map_err(ImageError::io(path))?;
        fs::set_permissions(path, fs::Permissions::from_mode(self.mode))
            .map_err(ImageError::io(path))
    }
}

/// Makes room at `dst` for an entry: removes what is there, except a directory that a
/// directory entry replaces (it only gets new metadata). Returns whether one was kept.
fn clear_for(dst: &Path, entry_is_dir: bool) -> Result<bool, ImageError> {
    match fs::symlink_metadata(dst) {
        Ok(m) if m.is_dir() && entry_is_dir => Ok(true),
        Ok(m) if m.is_dir() => fs::remove_dir_all(dst)
            .map(|()| false)
            .map_err(ImageError::io(dst)),
        Ok(_) => fs::remove_file(dst)
            .map(|()| false)
            .map_err(ImageError::io(dst)),
        Err(_) => Ok(false),
    }
}

/// A character or block device or a FIFO at `dst`, with the entry's owner and mode.
fn make_node(
    dst: &Path,
    kind: EntryType,
    dev: libc::dev_t,
    attrs: &Attrs,
) -> Result<(), ImageError> {
    let fmt = match kind {
        EntryType::Char => libc::S_IFCHR,
        EntryType::Block => libc::S_IFBLK,
        _ => libc::S_IFIFO,
    };
    let c = cstr(dst)?;
    // SAFETY: `c` is a valid NUL-terminated path; mknod has no other preconditions.
    if unsafe { libc::mknod(c.as_ptr(), fmt | attrs.mode, dev) } != 0 {
        return Err(ImageError::io(dst)(io::Error::last_os_error()));
    }
    attrs.apply(dst)
}

impl Tree {
    /// Creates the (empty) root directory, owned by root with mode 0755 until an archive's `./`
    /// entry says otherwise.
    pub fn new(root: &Path, sde: i64) -> Result<Tree, ImageError> {
        fs::create_dir(root).map_err(ImageError::io(root))?;
        std::os::unix::fs::lchown(root, Some(0), Some(0)).map_err(ImageError::io(root))?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o755))
            .map_err(ImageError::io(root))?;
        Ok(Tree {
            root: root.to_path_buf(),
            sde,
            mtimes: BTreeMap::new(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves directory components inside the tree, following symlinks with the tree as `/`
    /// (chroot semantics), creating missing directories (0755, root). Returns the resolved
    /// components relative to the root.
    fn resolve_dir(&self, comps: &[OsString], entry: &str) -> Result<Vec<OsString>, ImageError> {
        let mut todo: VecDeque<OsString> = comps.iter().cloned().collect();
        let mut cur: Vec<OsString> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop_front() {
            if c == "." || c.is_empty() {
                continue;
            }
            if c == ".." {
                cur.pop();
                continue;
            }
            let host = self.host_path(&cur).join(&c);
            match fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Err(ImageError::Archive {
                            archive: self.root.clone(),
                            entry: entry.into(),
                            reason: "too many levels of symbolic links in its parent path".into(),
                        });
                    }
                    let target = fs::read_link(&host).map_err(ImageError::io(&host))?;
                    if target.is_absolute() {
                        cur.clear();
                    }
                    let mut parts: Vec<OsString> = target
                        .components()
                        .filter_map(|p| match p {
                            Component::Normal(s) => Some(s.to_os_string()),
                            Component::ParentDir => Some(OsString::from("..")),
                            _ => None,
                        })
                        .collect();
                    while let Some(p) = parts.pop() {
                        todo.push_front(p);
                    }
                }
                Ok(m) if m.is_dir() => cur.push(c),
                Ok(_) => {
                    return Err(ImageError::Archive {
                        archive: self.root.clone(),
                        entry: entry.into(),
                        reason: format!(
                            "{} is not a directory but the entry lies below it",
                            host.display()
                        ),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&host).map_err(ImageError::io(&host))?;
                    fs::set_permissions(&host, fs::Permissions::from_mode(0o755))
                        .map_err(ImageError::io(&host))?;
                    cur.push(c);
                }
                Err(e) => {
                    return Err(ImageError::Io {
                        path: host,
                        source: e,
                    });
                }
            }
        }
        Ok(cur)
    }

    fn host_path(&self, comps: &[OsString]) -> PathBuf {
        let mut p = self.root.clone();
        p.extend(comps);
        p
    }

    /// Resolves an archive path to (host path, key relative to root); the last component is not
    /// followed (an entry replaces whatever is there).
    fn locate(&self, comps: &[OsString], entry: &str) -> Result<(PathBuf, PathBuf), ImageError> {
        let (last, parent) = comps.split_last().ok_or_else(|| ImageError::Archive {
            archive: self.root.clone(),
            entry: entry.into(),
            reason: "empty path".into(),
        })?;
        let mut rel = self.resolve_dir(parent, entry)?;
        rel.push(last.clone());
        let key: PathBuf = rel.iter().collect();
        Ok((self.host_path(&rel), key))
    }

    /// Extracts one archive on top of the tree. Later entries (and later archives) replace
    /// earlier ones at the same path; a directory over a directory only updates its metadata.
    pub fn extract(&mut self, archive_path: &Path) -> Result<(), ImageError> {
        let input = Input::open(archive_path)?;
        let mut archive = tar::Archive::new(input.reader);
        let entries = archive.entries().map_err(ImageError::io(archive_path))?;
        for entry in entries {
            let mut entry = entry.map_err(ImageError::io(archive_path))?;
            let raw_path = entry.path_bytes().into_owned();
            let name = String::from_utf8_lossy(&raw_path).into_owned();
            let bad = |reason: String| ImageError::Archive {
                archive: archive_path.to_path_buf(),
                entry: name.clone(),
                reason,
            };
            let kind = entry.header().entry_type();
            if matches!(
                kind,
                EntryType::XGlobalHeader
                    | EntryType::XHeader
                    | EntryType::GNULongName
                    | EntryType::GNULongLink
            ) {
                continue;
            }
            let comps = archive_components(&raw_path).ok_or_else(|| {
                bad("path contains `..`; refusing to write outside the tree".into())
            })?;
            let attrs = Attrs::of(entry.header(), self.sde, &bad)?;
            if comps.is_empty() {
                // The `./` entry describes the root directory itself.
                if kind == EntryType::Directory {
                    attrs.apply(&self.root)?;
                    self.mtimes.insert(PathBuf::new(), attrs.mtime);
                }
                continue;
            }
            let (dst, key) = self.locate(&comps, &name)?;
            let keep_dir = clear_for(&dst, kind == EntryType::Directory)?;
            self.write_entry(&mut entry, &dst, keep_dir, &attrs, &name, &bad)?;
            if kind != EntryType::Symlink {
                self.set_xattrs(&mut entry, &dst, &name, archive_path)?;
            }
            self.mtimes.insert(key, attrs.mtime);
        }
        let reader = archive.into_inner();
        Input {
            reader,
            child: input.child,
        }
        .finish(archive_path)
    }

    /// Writes one entry at `dst`, which [`clear_for`] has cleared (`keep_dir`: a directory
    /// is already there and only gets the entry's owner and mode).
    fn write_entry<R: Read>(
        &self,
        entry: &mut tar::Entry<R>,
        dst: &Path,
        keep_dir: bool,
        attrs: &Attrs,
        name: &str,
        bad: &dyn Fn(String) -> ImageError,
    ) -> Result<(), ImageError> {
        match entry.header().entry_type() {
            EntryType::Directory => {
                if !keep_dir {
                    fs::create_dir(dst).map_err(ImageError::io(dst))?;
                }
                attrs.apply(dst)
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(dst)
                    .map_err(ImageError::io(dst))?;
                io::copy(entry, &mut f).map_err(ImageError::io(dst))?;
                // Owner before mode: chown clears set-uid/gid bits.
                std::os::unix::fs::fchown(&f, Some(attrs.uid), Some(attrs.gid))
                    .map_err(ImageError::io(dst))?;
                f.set_permissions(fs::Permissions::from_mode(attrs.mode))
                    .map_err(ImageError::io(dst))
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad("symlink without a target".into()))?
                    .into_owned();
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), dst)
                    .map_err(ImageError::io(dst))?;
                std::os::unix::fs::lchown(dst, Some(attrs.uid), Some(attrs.gid))
                    .map_err(ImageError::io(dst))
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad("hard link without a target".into()))?
                    .into_owned();
                let tcomps = archive_components(&target)
                    .ok_or_else(|| bad("hard link target contains `..`".into()))?;
                let (src, _) = self.locate(&tcomps, name)?;
                fs::hard_link(&src, dst)
                    .map_err(|e| bad(format!("hard link to {}: {e}", src.display())))
            }
            kind @ (EntryType::Char | EntryType::Block | EntryType::Fifo) => {
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                make_node(dst, kind, libc::makedev(major, minor), attrs)
            }
            other => Err(bad(format!("unsupported tar entry type {other:?}"))),
        }
    }

    /// Restores extended attributes recorded as `SCHILY.xattr.*` PAX records (file
    /// capabilities such as `security.capability` on ping-like tools live there).
    fn set_xattrs<R: Read>(
        &self,
        entry: &mut tar::Entry<R>,
        dst: &Path,
        name: &str,
        archive: &Path,
    ) -> Result<(), ImageError> {
        let Ok(Some(exts)) = entry.pax_extensions() else {
            return Ok(());
        };
        for ext in exts {
            let ext = ext.map_err(ImageError::io(archive))?;
            let Some(attr) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                continue;
            };
            let attr = CString::new(attr).map_err(|_| ImageError::Archive {
                archive: archive.to_path_buf(),
                entry: name.into(),
                reason: "xattr name contains NUL".into(),
            })?;
            let value = ext.value_bytes();
            let c = cstr(dst)?;
            // SAFETY: both strings are NUL-terminated and `value` is valid for its length.
            let rc = unsafe {
                libc::lsetxattr(
                    c.as_ptr(),
                    attr.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            if rc != 0 {
                return Err(ImageError::Archive {
                    archive: archive.to_path_buf(),
                    entry: name.into(),
                    reason: format!(
                        "setting xattr {}: {}",
                        attr.to_string_lossy(),
                        io::Error::last_os_error()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Writes a generated file (mode 0644, root), replacing whatever is there.
    fn write_file(&self, rel: &str, contents: &[u8]) -> Result<(), ImageError> {
        let comps: Vec<OsString> = rel
            .split('/')
            .filter(|s| !s.is_empty())
            .map(OsString::from)
            .collect();
        let (dst, _) = self.locate(&comps, rel)?;
        if let Ok(m) = fs::symlink_metadata(&dst) {
            if m.is_dir() {
                fs::remove_dir_all(&dst).map_err(ImageError::io(&dst))?;
            } else {
                fs::remove_file(&dst).map_err(ImageError::io(&dst))?;
            }
        }
        fs::write(&dst, contents).map_err(ImageError::io(&dst))?;
        std::os::unix::fs::lchown(&dst, Some(0), Some(0)).map_err(ImageError::io(&dst))?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o644))
            .map_err(ImageError::io(&dst))?;
        Ok(())
    }

    /// Adds what booting from the disk needs and the base does not provide by itself:
    /// - `/boot/grub/grub.cfg` booting the newest kernel of the base by label, on serial and
    ///   VGA console (providers' web consoles are VGA, QEMU tests read the serial port);
    /// - `/boot/grub/i386-pc/` modules copied from the base's own GRUB (core.img is built from
    ///   the same directory, so modules and core always match);
    /// - `/etc/fstab` whose root line names the root by label (other lines kept).
    pub fn add_boot_files(&mut self, label: &str) -> Result<BootFiles, ImageError> {
        let kernel =
            newest_kernel(&self.root)?.ok_or_else(|| ImageError::NoKernel(self.root.clone()))?;
        let grub_src = self.root.join("usr/lib/grub/i386-pc");
        if !grub_src.join("boot.img").is_file() || !grub_src.join("kernel.img").is_file() {
            return Err(ImageError::NoGrub(self.root.clone()));
        }
        let mut names: Vec<OsString> = fs::read_dir(&grub_src)
            .map_err(ImageError::io(&grub_src))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .filter(|n| {
                let b = n.as_bytes();
                b.ends_with(b".mod") || b.ends_with(b".lst")
            })
            .collect();
        names.sort();
        for n in &names {
            let src = grub_src.join(n);
            let data = fs::read(&src).map_err(ImageError::io(&src))?;
            self.write_file(&format!("boot/grub/i386-pc/{}", n.to_string_lossy()), &data)?;
        }
        let cfg = format!(
            "# Generated by mailbake image: boots the base's newest kernel from the partition\n\
             # labelled {label}, with the console on both the serial port and the screen. The echo\n\
             # lines mark on the serial console when each file is loaded (boot timing).\n\
             serial --unit=0 --speed=115200\n\
             terminal_input serial console\n\
             terminal_output serial console\n\
             set timeout=0\n\
             menuentry 'mailbake {kernel}' {{\n\
             \tsearch --no-floppy --label --set=root {label}\n\
             \techo 'mailbake-grub: loading Linux {kernel}'\n\
             \tlinux /boot/vmlinuz-{kernel} root=LABEL={label} rw console=tty0 console=ttyS0,115200\n\
             \techo 'mailbake-grub: loading the initrd'\n\
             \tinitrd /boot/initrd.img-{kernel}\n\
             \techo 'mailbake-grub: starting Linux'\n\
             }}\n"
        );
        self.write_file("boot/grub/grub.cfg", cfg.as_bytes())?;

        let fstab_path = self.root.join("etc/fstab");
        let old = match fs::symlink_metadata(&fstab_path) {
            Ok(m) if m.is_file() => {
                fs::read_to_string(&fstab_path).map_err(ImageError::io(&fstab_path))?
            }
            _ => String::new(),
        };
        let mut fstab = format!("LABEL={label}\t/\text4\tdefaults,errors=remount-ro\t0 1\n");
        for line in old.lines() {
            let mut fields = line.split_whitespace();
            let is_root = !line.trim_start().starts_with('#') && fields.nth(1) == Some("/");
            if !is_root {
                fstab.push_str(line);
                fstab.push('\n');
            }
        }
        self.write_file("etc/fstab", fstab.as_bytes())?;
        Ok(BootFiles { kernel })
    }

    /// Sets every entry's atime and mtime (recorded mtime, or SOURCE_DATE_EPOCH for generated
    /// and implicit entries). Done last, in sorted order, so nothing touches a directory after.
    pub fn finish(&self) -> Result<(), ImageError> {
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let host = self.root.join(&rel);
            let meta = fs::symlink_metadata(&host).map_err(ImageError::io(&host))?;
            if meta.is_dir() {
                let mut kids: Vec<OsString> = fs::read_dir(&host)
                    .map_err(ImageError::io(&host))?
                    .map(|e| e.map(|e| e.file_name()))
                    .collect::<Result<_, _>>()
                    .map_err(ImageError::io(&host))?;
                kids.sort();
                for k in kids.into_iter().rev() {
                    stack.push(rel.join(k));
                }
            }
            let t = self.mtimes.get(&rel).copied().unwrap_or(self.sde);
            let ft = filetime::FileTime::from_unix_time(t, 0);
            filetime::set_symlink_file_times(&host, ft, ft).map_err(ImageError::io(&host))?;
        }
        Ok(())
    }
}

/// Compares version strings the way humans expect (`6.1.0-10` after `6.1.0-9`): runs of digits
/// numerically, everything else bytewise.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let o = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if o.is_ne() {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

/// The newest `/boot/vmlinuz-<ver>` that has a `/boot/initrd.img-<ver>`.
pub fn newest_kernel(root: &Path) -> Result<Option<String>, ImageError> {
    let boot = root.join("boot");
    let rd = match fs::read_dir(&boot) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ImageError::Io {
                path: boot,
                source: e,
            });
        }
    };
    let mut names = Vec::new();
    for e in rd {
        let e = e.map_err(ImageError::io(&boot))?;
        if let Some(name) = e.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    Ok(newest_kernel_in(&names))
}

/// Of the file names in a `/boot`, the newest kernel version `<ver>` whose `vmlinuz-<ver>` has
/// its `initrd.img-<ver>` beside it: the one a base boots. Shared by both kinds of base.
pub fn newest_kernel_in(names: &[String]) -> Option<String> {
    names
        .iter()
        .filter_map(|n| n.strip_prefix("vmlinuz-"))
        .filter(|v| names.iter().any(|n| *n == format!("initrd.img-{v}")))
        .max_by(|a, b| version_cmp(a, b))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_kernel_with_an_initrd_is_chosen() {
        let names: Vec<String> = [
            "vmlinuz-6.1.0-9-amd64",
            "initrd.img-6.1.0-9-amd64",
            "vmlinuz-6.1.0-10-amd64",
            "initrd.img-6.1.0-10-amd64",
            "vmlinuz-6.1.0-11-amd64",
            "config-6.1.0-11-amd64",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(newest_kernel_in(&names).as_deref(), Some("6.1.0-10-amd64"));
        assert_eq!(newest_kernel_in(&names[4..]), None);
    }

    #[test]
    fn kernel_versions_sort_numerically() {
        assert!(version_cmp("6.1.0-10-amd64", "6.1.0-9-amd64").is_gt());
        assert!(version_cmp("5.15.0-91-generic", "5.15.0-100-generic").is_lt());
        assert!(version_cmp("6.1.0-50-amd64", "6.1.0-50-amd64").is_eq());
    }

    #[test]
    fn archive_paths_are_normalised_and_dotdot_refused() {
        let c = archive_components(b"./etc//fstab").unwrap_or_default();
        assert_eq!(c, vec![OsString::from("etc"), OsString::from("fstab")]);
        assert!(archive_components(b"../etc/passwd").is_none());
        assert_eq!(archive_components(b"./"), Some(vec![]));
    }
}
