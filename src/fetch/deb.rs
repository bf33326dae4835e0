//! Reading a `.deb` without dpkg: the ar container, the control fields and the data payload.
//!
//! A `.deb` is an ar archive whose members are, in this order, `debian-binary` (the format
//! version, `2.0`), `control.tar[.gz|.xz|.zst]` (metadata and maintainer scripts) and
//! `data.tar[.gz|.xz|.zst]` (the files the package installs). The overlay needs the files and
//! their ownership and modes, never the maintainer scripts: the image must be the same bytes
//! whoever builds it, and nothing is executed at build time.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// Why a `.deb` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a Debian binary package: {reason}")]
    NotADeb { path: PathBuf, reason: String },
    #[error(
        "{path}: member {member} uses an unsupported compression (mailbake reads .gz, .xz, .zst and plain tar)"
    )]
    UnsupportedCompression { path: PathBuf, member: String },
    #[error("{path}: payload entry {entry:?} {reason}")]
    BadEntry {
        path: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("{path}: the control file has no {field} field")]
    MissingField { path: PathBuf, field: String },
}

/// What a payload entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A hard link to an earlier entry; `link_target` names it (normalized like `path`).
    Hardlink,
}

/// One entry of a package's `data.tar`, in archive order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadEntry {
    /// Path relative to `/`, without a leading `./` or a trailing `/`, e.g. `usr/bin/chasquid`.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Symlink target as stored (may be relative), or the normalized path of a hard link's
    /// target.
    pub link_target: Option<String>,
    /// File contents; empty for everything but regular files.
    pub contents: Vec<u8>,
}

/// The fields of a package's `control` file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlFields {
    pub fields: Vec<(String, String)>,
}

impl ControlFields {
    /// The value of a field (field names are case-insensitive in deb822).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Parses deb822 text: `Field: value` lines, with continuation lines starting with a
    /// space or tab appended to the previous field.
    pub fn parse(text: &str) -> ControlFields {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some((_, v)) = fields.last_mut() {
                    v.push('\n');
                    v.push_str(line.trim_start());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                fields.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        ControlFields { fields }
    }
}

/// Reads the `data.tar` entries of a `.deb`, in archive order. The root directory entry
/// (`./`) is left out. Paths that are absolute or contain `..` are refused, since the
/// caller places these paths into an image tree.
pub fn read_payload(deb: &Path) -> Result<Vec<PayloadEntry>, DebError> {
    with_member(deb, "data.tar", |tar| read_entries(deb, tar))?
}

/// Reads the package's `control` file from `control.tar`.
pub fn read_control(deb: &Path) -> Result<ControlFields, DebError> {
    with_member(deb, "control.tar", |tar| {
        let mut archive = tar::Archive::new(tar);
        let io_err = |source| DebError::Io {
            path: deb.to_owned(),
            source,
        };
        for entry in archive.entries().map_err(io_err)? {
            let mut entry = entry.map_err(io_err)?;
            let raw = entry.path_bytes();
            let name = String::from_utf8_lossy(&raw);
            if name.trim_start_matches("./") == "control" {
                let mut text = String::new();
                entry.read_to_string(&mut text).map_err(io_err)?;
                return Ok(ControlFields::parse(&text));
            }
        }
        Err(DebError::NotADeb {
            path: deb.to_owned(),
            reason: "control.tar has no control file".into(),
        })
    })?
}

/// The package's `Version` field.
pub fn read_version(deb: &Path) -> Result<String, DebError> {
    let control = read_control(deb)?;
    control
        .get("Version")
        .map(str::to_owned)
        .ok_or_else(|| DebError::MissingField {
            path: deb.to_owned(),
            field: "Version".into(),
        })
}

/// Finds the ar member `prefix` or `prefix.<compression>` and hands `f` a decompressing
/// reader for it. Checks `debian-binary` on the way, so a random ar file is not taken for a
/// package.
fn with_member<T>(
    deb: &Path,
    prefix: &str,
    f: impl FnOnce(&mut dyn Read) -> T,
) -> Result<T, DebError> {
    let file = File::open(deb).map_err(|source| DebError::Io {
        path: deb.to_owned(),
        source,
    })?;
    let not_deb = |reason: String| DebError::NotADeb {
        path: deb.to_owned(),
        reason,
    };
    let mut ar = ar::Archive::new(BufReader::new(file));
    let mut index = 0;
    while let Some(member) = ar.next_entry() {
        let mut member = member.map_err(|e| not_deb(format!("bad ar container: {e}")))?;
        // GNU ar terminates names with '/'; dpkg-deb does not, but accept both.
        let name = String::from_utf8_lossy(member.header().identifier())
            .trim_end_matches('/')
            .to_owned();
        if index == 0 {
            let mut version = String::new();
            if name != "debian-binary" {
                return Err(not_deb(format!(
                    "first member is {name:?}, expected debian-binary"
                )));
            }
            member
                .read_to_string(&mut version)
                .map_err(|e| not_deb(format!("unreadable debian-binary: {e}")))?;
            if !version.trim().starts_with("2.") {
                return Err(not_deb(format!(
                    "format version {:?}, expected 2.x",
                    version.trim()
                )));
            }
        }
        index += 1;
        let Some(ext) = name.strip_prefix(prefix) else {
            continue;
        };
        let unsupported = || DebError::UnsupportedCompression {
            path: deb.to_owned(),
            member: name.clone(),
        };
        return Ok(match ext {
            "" => f(&mut member),
            ".gz" => f(&mut flate2::read::GzDecoder::new(member)),
            // Multi-stream so a payload compressed in parallel (several xz streams) is read whole.
            ".xz" => f(&mut liblzma::read::XzDecoder::new_multi_decoder(member)),
            ".zst" => f(
                &mut zstd::stream::read::Decoder::new(member).map_err(|source| DebError::Io {
                    path: deb.to_owned(),
                    source,
                })?,
            ),
            _ => return Err(unsupported()),
        });
    }
    Err(not_deb(format!("no {prefix}.* member")))
}

fn read_entries(deb: &Path, tar: &mut dyn Read) -> Result<Vec<PayloadEntry>, DebError> {
    let io_err = |source| DebError::Io {
        path: deb.to_owned(),
        source,
    };
    let mut archive = tar::Archive::new(tar);
    let mut out = Vec::new();
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let bad = |reason: &str| DebError::BadEntry {
            path: deb.to_owned(),
            entry: shown.clone(),
            reason: reason.to_owned(),
        };
        let Some(path) = normalize(&raw_path).map_err(&bad)? else {
            continue; // the root directory itself
        };
        let header = entry.header();
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink,
            tar::EntryType::Link => EntryKind::Hardlink,
            other => return Err(bad(&format!("has unsupported tar type {other:?}"))),
        };
        let mode = header.mode().map_err(io_err)? & 0o7777;
        let uid = header.uid().map_err(io_err)?;
        let gid = header.gid().map_err(io_err)?;
        let link_raw = entry.link_name_bytes().map(|l| l.into_owned());
        let link_target = match (kind, link_raw) {
            (EntryKind::Symlink, Some(l)) => Some(
                String::from_utf8(l).map_err(|_| bad("has a symlink target that is not UTF-8"))?,
            ),
            (EntryKind::Hardlink, Some(l)) => Some(
                normalize(&l)
                    .map_err(|r| bad(&format!("has a hard link target that {r}")))?
                    .ok_or_else(|| bad("is a hard link to the root directory"))?,
            ),
            (EntryKind::Symlink | EntryKind::Hardlink, None) => {
                return Err(bad("is a link without a target"));
            }
            _ => None,
        };
        let mut contents = Vec::new();
        if kind == EntryKind::File {
            entry.read_to_end(&mut contents).map_err(io_err)?;
        }
        out.push(PayloadEntry {
            path,
            kind,
            mode,
            uid,
            gid,
            link_target,
            contents,
        });
    }
    Ok(out)
}

/// `./usr/bin/` → `usr/bin`; `./` → None. Refuses paths that could land outside the tree
/// they are unpacked into.
fn normalize(raw: &[u8]) -> Result<Option<String>, &'static str> {
    let s = std::str::from_utf8(raw).map_err(|_| "is not UTF-8")?;
    let mut parts = Vec::new();
    for c in Path::new(s).components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => parts.push(p.to_str().ok_or("is not UTF-8")?),
            Component::RootDir | Component::Prefix(_) => return Err("is absolute"),
            Component::ParentDir => return Err("contains `..`"),
        }
    }
    Ok(if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize(b"./"), Ok(None));
        assert_eq!(normalize(b"./usr/bin/"), Ok(Some("usr/bin".into())));
        assert_eq!(normalize(b"usr//bin/x"), Ok(Some("usr/bin/x".into())));
        assert_eq!(normalize(b"/etc/passwd"), Err("is absolute"));
        assert_eq!(normalize(b"./../etc"), Err("contains `..`"));
    }

    #[test]
    fn parses_control_with_continuations() {
        let c = ControlFields::parse(
            "Package: chasquid\nVersion: 1.15.0-1+b4\nDescription: SMTP\n server\n .\n more\n",
        );
        assert_eq!(c.get("version"), Some("1.15.0-1+b4"));
        assert_eq!(c.get("Description"), Some("SMTP\nserver\n.\nmore"));
        assert_eq!(c.get("Depends"), None);
    }

    /// Builds a small .deb with the given data.tar compression, to test the reader without
    /// the network. `ar` is the same crate used for reading, but the layout is dpkg's.
    fn make_deb(dir: &Path, compress: &str) -> PathBuf {
        let mut data = tar::Builder::new(Vec::new());
        // Every header sets uid and gid: the reader refuses blank numeric fields.
        let header = || {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h
        };
        let mut h = header();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        data.append_data(&mut h, "./", &[][..]).expect("dir");
        data.append_data(&mut h, "./usr/", &[][..]).expect("dir");
        let mut h = header();
        h.set_mode(0o4755);
        h.set_gid(8);
        h.set_size(5);
        data.append_data(&mut h, "./usr/prog", &b"hello"[..])
            .expect("file");
        let mut h = header();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        data.append_link(&mut h, "./usr/alias", "prog")
            .expect("symlink");
        let mut h = header();
        h.set_entry_type(tar::EntryType::Link);
        h.set_mode(0o4755);
        h.set_size(0);
        data.append_link(&mut h, "./usr/hard", "./usr/prog")
            .expect("hardlink");
        let data = data.into_inner().expect("tar");
        let data = match compress {
            "gz" => {
                use std::io::Write;
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&data).expect("gz");
                e.finish().expect("gz")
            }
            "zst" => zstd::stream::encode_all(&data[..], 3).expect("zst"),
            "xz" => {
                let mut out = Vec::new();
                liblzma::read::XzEncoder::new(&data[..], 6)
                    .read_to_end(&mut out)
                    .expect("xz");
                out
            }
            _ => data,
        };
        let mut control = tar::Builder::new(Vec::new());
        let text = b"Package: demo\nVersion: 1:2.0-3\nArchitecture: amd64\n";
        let mut h = header();
        h.set_mode(0o644);
        h.set_size(text.len() as u64);
        control
            .append_data(&mut h, "./control", &text[..])
            .expect("control");
        let control = control.into_inner().expect("tar");

        let path = dir.join(format!("demo-{compress}.deb"));
        let mut ar = ar::Builder::new(File::create(&path).expect("create"));
        let data_name = if compress.is_empty() {
            "data.tar".to_owned()
        } else {
            format!("data.tar.{compress}")
        };
        for (name, bytes) in [
            ("debian-binary", &b"2.0\n"[..]),
            ("control.tar", &control[..]),
            (data_name.as_str(), &data[..]),
        ] {
            let h = ar::Header::new(name.as_bytes().to_vec(), bytes.len() as u64);
            ar.append(&h, bytes).expect("ar member");
        }
        path
    }

    #[test]
    fn reads_payload_in_every_compression() {
        let dir = tempfile::tempdir().expect("tempdir");
        for compress in ["", "gz", "xz", "zst"] {
            let deb = make_deb(dir.path(), compress);
            let entries = read_payload(&deb).expect("payload");
            let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
            assert_eq!(
                paths,
                ["usr", "usr/prog", "usr/alias", "usr/hard"],
                "{compress}"
            );
            assert_eq!(entries[0].kind, EntryKind::Dir);
            let prog = &entries[1];
            assert_eq!(prog.kind, EntryKind::File);
            assert_eq!(prog.mode, 0o4755);
            assert_eq!(prog.gid, 8);
            assert_eq!(prog.contents, b"hello");
            assert_eq!(entries[2].kind, EntryKind::Symlink);
            assert_eq!(entries[2].link_target.as_deref(), Some("prog"));
            assert_eq!(entries[3].kind, EntryKind::Hardlink);
            assert_eq!(entries[3].link_target.as_deref(), Some("usr/prog"));
            assert_eq!(read_version(&deb).expect("version"), "1:2.0-3");
        }
    }

    #[test]
    fn rejects_a_file_that_is_not_a_deb() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.deb");
        std::fs::write(&p, b"not an ar archive").expect("write");
        let err = read_payload(&p).expect_err("not a deb");
        assert!(matches!(err, DebError::NotADeb { .. }), "{err}");
        assert!(err.to_string().contains("x.deb"), "{err}");
    }
}
