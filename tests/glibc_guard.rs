//! Every ELF file in the overlay runs on Ubuntu 22.04: it needs at most `GLIBC_2.35`.
//!
//! The pinned packages come from newer Debian suites (chasquid from forky, lego from
//! trixie-backports), built against a newer glibc than Ubuntu 22.04's 2.35. What a binary
//! really requires is in its ELF version-needs section (`.gnu.version_r`, `SHT_GNU_VERNEED`):
//! one entry per library it links, each listing the symbol versions it needs from it. The
//! dynamic loader refuses to start a program whose needs its libc does not define, so this
//! test reads exactly that section (with the `object` crate), not strings that happen to look
//! like a version. A statically linked program (Go without cgo, or static-pie) names no
//! library and needs nothing from the system's glibc.

use std::fmt;
use std::path::{Path, PathBuf};

use object::elf::{DT_NEEDED, PT_INTERP};
use object::read::elf::{Dyn, ElfFile, FileHeader, ProgramHeader};

/// Ubuntu 22.04's glibc, the oldest the image must run on.
const UBUNTU_2204_GLIBC: GlibcVersion = GlibcVersion(2, 35);

/// A `GLIBC_<major>.<minor>[.<patch>]` symbol version; the patch level never matters for
/// compatibility across releases, so it is ignored (`GLIBC_2.2.5` counts as 2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct GlibcVersion(u32, u32);

impl GlibcVersion {
    /// `None` for names that are not glibc release versions (`GLIBC_PRIVATE`, `GCC_3.0`).
    fn parse(name: &str) -> Option<GlibcVersion> {
        let mut parts = name.strip_prefix("GLIBC_")?.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(GlibcVersion(major, minor))
    }
}

impl fmt::Display for GlibcVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GLIBC_{}.{}", self.0, self.1)
    }
}

/// What one ELF file asks of the system it runs on.
#[derive(Debug)]
struct ElfNeeds {
    /// `DT_NEEDED` libraries; empty for a static program.
    libraries: Vec<String>,
    /// The program interpreter (dynamic loader), if any.
    interpreter: Option<String>,
    /// Every `(library, version name)` pair of the version-needs section.
    versions: Vec<(String, String)>,
}

impl ElfNeeds {
    fn is_dynamic(&self) -> bool {
        !self.libraries.is_empty() || self.interpreter.is_some()
    }

    /// The newest glibc release version any library entry asks for.
    fn newest_glibc(&self) -> Option<GlibcVersion> {
        self.versions
            .iter()
            .filter_map(|(_, v)| GlibcVersion::parse(v))
            .max()
    }

    /// Why this file would not run on a system with glibc `limit`, if it would not: a glibc
    /// release newer than the limit, or glibc's private interface (tied to one exact build).
    fn problems(&self, limit: GlibcVersion) -> Vec<String> {
        self.versions
            .iter()
            .filter(|(_, v)| {
                v == "GLIBC_PRIVATE" || GlibcVersion::parse(v).is_some_and(|g| g > limit)
            })
            .map(|(lib, v)| format!("{v} from {lib}"))
            .collect()
    }
}

fn utf8(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads the dynamic-linking needs of an ELF file of either class.
fn elf_needs(path: &Path, data: &[u8]) -> Result<ElfNeeds, String> {
    match object::FileKind::parse(data).map_err(|e| e.to_string())? {
        object::FileKind::Elf64 => needs_of::<object::elf::FileHeader64<object::Endianness>>(data),
        object::FileKind::Elf32 => needs_of::<object::elf::FileHeader32<object::Endianness>>(data),
        other => Err(format!("not an ELF file: {other:?}")),
    }
    .map_err(|e| format!("{}: {e}", path.display()))
}

fn needs_of<Elf: FileHeader<Endian = object::Endianness>>(data: &[u8]) -> Result<ElfNeeds, String> {
    let file = ElfFile::<Elf>::parse(data).map_err(|e| e.to_string())?;
    let endian = file.endian();
    let header = file.elf_header();
    let sections = header.sections(endian, data).map_err(|e| e.to_string())?;

    let mut interpreter = None;
    for segment in header
        .program_headers(endian, data)
        .map_err(|e| e.to_string())?
    {
        if segment.p_type(endian) == PT_INTERP {
            let bytes = segment
                .data(endian, data)
                .map_err(|_| "unreadable PT_INTERP".to_string())?;
            interpreter = Some(utf8(bytes.strip_suffix(&[0]).unwrap_or(bytes)));
        }
    }

    let mut libraries = Vec::new();
    if let Some((entries, strtab)) = sections.dynamic(endian, data).map_err(|e| e.to_string())? {
        let strings = sections
            .strings(endian, data, strtab)
            .map_err(|e| e.to_string())?;
        for entry in entries {
            if entry.tag(endian) == DT_NEEDED {
                let name = entry.string(endian, strings).map_err(|e| e.to_string())?;
                libraries.push(utf8(name));
            }
        }
    }

    let mut versions = Vec::new();
    if let Some((mut needs, strtab)) = sections
        .gnu_verneed(endian, data)
        .map_err(|e| e.to_string())?
    {
        let strings = sections
            .strings(endian, data, strtab)
            .map_err(|e| e.to_string())?;
        while let Some((need, mut aux)) = needs.next().map_err(|e| e.to_string())? {
            let library = utf8(need.file(endian, strings).map_err(|e| e.to_string())?);
            while let Some(version) = aux.next().map_err(|e| e.to_string())? {
                let name = version.name(endian, strings).map_err(|e| e.to_string())?;
                versions.push((library.clone(), utf8(name)));
            }
        }
    }

    // Section headers can be stripped entirely; the loader would still find the needs, but
    // this reader would not, and a dynamic file without any recorded need would pass unseen.
    if !libraries.is_empty() && sections.is_empty() {
        return Err("dynamic, but without section headers to read its version needs from".into());
    }
    Ok(ElfNeeds {
        libraries,
        interpreter,
        versions,
    })
}

/// Every regular file under `root` that starts with the ELF magic, sorted by path.
fn elf_files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read overlay dir") {
            let entry = entry.expect("dir entry");
            let ty = entry.file_type().expect("file type");
            if ty.is_dir() {
                dirs.push(entry.path());
            } else if ty.is_file() {
                let data = std::fs::read(entry.path()).expect("read file");
                if data.starts_with(b"\x7fELF") {
                    found.push((entry.path(), data));
                }
            }
        }
    }
    found.sort();
    found
}

/// The overlay of the bundled example, built and unpacked into `dir/root`.
fn built_overlay(dir: &Path) -> PathBuf {
    testkit::built_overlay(dir, &testkit::example_site()).root
}

/// One line per ELF file: static, or dynamic with its libraries and every glibc version it
/// needs (newest last).
fn describe(root: &Path, files: &[(PathBuf, ElfNeeds)]) -> String {
    let mut table = String::new();
    for (path, needs) in files {
        let shown = path.strip_prefix(root).unwrap_or(path).display();
        if needs.is_dynamic() {
            // As written in the file (GLIBC_2.2.5, GLIBC_PRIVATE), oldest release first.
            let mut names: Vec<&str> = needs
                .versions
                .iter()
                .map(|(_, v)| v.as_str())
                .filter(|v| v.starts_with("GLIBC_"))
                .collect();
            names.sort_by_key(|v| (GlibcVersion::parse(v), *v));
            names.dedup();
            table.push_str(&format!(
                "/{shown}: dynamic ({}), needs {}\n",
                needs.libraries.join(" "),
                names.join(" ")
            ));
        } else {
            table.push_str(&format!("/{shown}: static, needs nothing\n"));
        }
    }
    table
}

#[test]
fn every_elf_file_in_the_overlay_runs_on_ubuntu_22_04_glibc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = built_overlay(dir.path());
    let files: Vec<(PathBuf, ElfNeeds)> = elf_files(&root)
        .into_iter()
        .map(|(path, data)| {
            let needs = elf_needs(&path, &data).unwrap_or_else(|e| panic!("{e}"));
            (path, needs)
        })
        .collect();
    let table = describe(&root, &files);
    eprintln!("ELF files in the overlay:\n{table}");

    // The guard must have something to guard: the shipped daemon is one of the files.
    assert!(
        files.iter().any(|(p, _)| p.ends_with("usr/bin/chasquid")),
        "usr/bin/chasquid is not among the ELF files found:\n{table}"
    );
    let offenders: Vec<String> = files
        .iter()
        .filter_map(|(path, needs)| {
            let problems = needs.problems(UBUNTU_2204_GLIBC);
            (!problems.is_empty()).then(|| {
                format!(
                    "/{}: {}",
                    path.strip_prefix(&root).unwrap_or(path).display(),
                    problems.join(", ")
                )
            })
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "these files need more than Ubuntu 22.04's {UBUNTU_2204_GLIBC} and would not start \
         there; pin a build made against an older glibc:\n{}\n\nall ELF files:\n{table}",
        offenders.join("\n")
    );
}

/// The reader itself: a limit below what chasquid needs must flag it, and a static-pie
/// program (the host's ldconfig) has a dynamic section yet needs nothing.
#[test]
fn the_guard_flags_a_newer_need_and_passes_a_static_program() {
    let util = testkit::chasquid_util();
    let data = std::fs::read(&util).expect("read chasquid-util");
    let needs = elf_needs(&util, &data).expect("chasquid-util is ELF");
    assert!(needs.is_dynamic(), "{needs:?}");
    assert!(
        needs.libraries.iter().any(|l| l.starts_with("libc.so")),
        "{needs:?}"
    );
    let newest = needs.newest_glibc().expect("needs some glibc version");
    assert!(newest > GlibcVersion(2, 33), "{needs:?}");
    let problems = needs.problems(GlibcVersion(2, 33));
    assert!(
        problems.iter().any(|p| p.ends_with("from libc.so.6")),
        "a 2.33 limit flags chasquid-util's {newest}: {problems:?}"
    );

    let ldconfig = Path::new("/sbin/ldconfig");
    let data = std::fs::read(ldconfig).expect("read /sbin/ldconfig");
    let needs = elf_needs(ldconfig, &data).expect("ldconfig is ELF");
    assert!(!needs.is_dynamic(), "ldconfig is static-pie: {needs:?}");
    assert!(needs.versions.is_empty(), "{needs:?}");
    assert!(needs.problems(GlibcVersion(2, 0)).is_empty());
}

#[test]
fn glibc_version_names_compare_by_release() {
    assert_eq!(GlibcVersion::parse("GLIBC_2.2.5"), Some(GlibcVersion(2, 2)));
    assert_eq!(GlibcVersion::parse("GLIBC_2.34"), Some(GlibcVersion(2, 34)));
    assert_eq!(GlibcVersion::parse("GLIBC_PRIVATE"), None);
    assert_eq!(GlibcVersion::parse("GCC_3.0"), None);
    // Numerically, not as text: 2.4 is older than 2.35.
    assert!(GlibcVersion(2, 4) < GlibcVersion(2, 35));
    assert!(GlibcVersion(2, 36) > UBUNTU_2204_GLIBC);
}
