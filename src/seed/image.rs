//! `seed.img`: a NoCloud seed volume, FAT (vfat) labelled `cidata`, made in memory with the
//! `fatfs` crate so that no host tool (and no host tool's version) shapes its bytes.
//!
//! Reproducible by construction: the volume serial is taken from a digest of the content
//! (distinct seeds get distinct serials, equal seeds equal ones), every timestamp is the FAT
//! epoch (1980-01-01 00:00, what a FAT date of zero means), files are written in a fixed
//! order into a zero-filled image whose size depends only on the content.

use std::io::{self, Cursor, Write};

use fatfs::{Date, DateTime, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider};
use sha2::{Digest, Sha256};

/// The label cloud-init's NoCloud data source looks for (it accepts either case).
pub const LABEL: &[u8; 11] = b"cidata     ";

const MIB: usize = 1 << 20;

/// Every timestamp in the image: the FAT epoch.
#[derive(Debug)]
struct FixedTime;

impl TimeProvider for FixedTime {
    fn get_current_date(&self) -> Date {
        Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }
    fn get_current_date_time(&self) -> DateTime {
        DateTime {
            date: self.get_current_date(),
            time: Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static FIXED_TIME: FixedTime = FixedTime;

/// A FAT image holding `files` (name, bytes) in the root directory, in the given order.
pub fn build(files: &[(&str, &[u8])]) -> io::Result<Vec<u8>> {
    let content: usize = files.iter().map(|(_, d)| d.len()).sum();
    // Room for the content twice over plus FAT overhead, in whole MiB: small (a seed is a few
    // KiB to a few hundred), and a function of the content alone.
    let size = (2 * content + MIB).div_ceil(MIB) * MIB;
    let mut serial = Sha256::new();
    for (name, data) in files {
        serial.update(name.as_bytes());
        serial.update([0]);
        serial.update((data.len() as u64).to_be_bytes());
        serial.update(data);
    }
    let serial = serial.finalize();
    let volume_id = u32::from_be_bytes([serial[0], serial[1], serial[2], serial[3]]);

    let mut disk = Cursor::new(vec![0u8; size]);
    fatfs::format_volume(
        &mut disk,
        FormatVolumeOptions::new()
            .volume_label(*LABEL)
            .volume_id(volume_id),
    )?;
    disk.set_position(0);
    {
        let fs = FileSystem::new(&mut disk, FsOptions::new().time_provider(&FIXED_TIME))?;
        {
            let root = fs.root_dir();
            for (name, data) in files {
                let mut file = root.create_file(name)?;
                file.truncate()?;
                file.write_all(data)?;
                file.flush()?;
            }
        }
        fs.unmount()?;
    }
    Ok(disk.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn same_content_same_bytes_and_files_read_back() {
        let files: [(&str, &[u8]); 2] = [("user-data", b"#cloud-config\n"), ("meta-data", b"x\n")];
        let a = build(&files).unwrap();
        assert_eq!(a, build(&files).unwrap());
        let fs = FileSystem::new(Cursor::new(a), FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label(), "cidata");
        let mut got = Vec::new();
        fs.root_dir()
            .open_file("user-data")
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, b"#cloud-config\n");
        let other = build(&[("user-data", b"#cloud-config\n#2\n")]).unwrap();
        assert_ne!(
            build(&files).unwrap()[..512],
            other[..512],
            "serial follows content"
        );
    }
}
