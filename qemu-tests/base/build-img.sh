#!/usr/bin/env bash
# Build (or reuse) the test stand-in for Ubuntu's cloud-image disk
# (ubuntu-22.04-server-cloudimg-amd64.img), which this workplace cannot download: the Debian 12
# test base (build.sh) laid out the way livecd-rootfs lays out Ubuntu's disk
# (live-build/ubuntu-cpc/hooks.d/base/disk-image-uefi.binary, branch ubuntu/jammy):
#
#   GPT, made in Ubuntu's order: partition 14 (4 MiB, BIOS boot) first on the disk, then 15
#   (106 MiB ESP, vfat labelled UEFI), then 1 (ext4 labelled cloudimg-rootfs) over the rest;
#   GRUB for BIOS in partition 14 (boot.img in sector 0), GRUB for EFI in the ESP
#   (EFI/BOOT/BOOTX64.EFI, with EFI/ubuntu/grub.cfg handing over to the root's grub.cfg);
#   /boot/grub/grub.cfg made by the base's own grub-mkconfig with Ubuntu's cloud settings;
#   Ubuntu's fstab (root by LABEL=cloudimg-rootfs, /boot/efi by LABEL=UEFI);
#   /usr/bin/ping with its capability (cap_net_raw), as on Ubuntu.
#
# What differs from Ubuntu's disk, and why it does or does not matter: docs/image.md
# ("The test stand-in").
#
# Output: the path of the .img (qcow2) on stdout; beside it SHA256SUMS, in Ubuntu's format
# ("HEX *NAME"), unsigned: the tests sign it with a throw-away key. Progress on stderr.
# Cache:  <cache>/base/img-<key>/, key = sha256 of the tarball's own key and this script, so a
#         second call with the same inputs returns at once.
# Needs:  root (the tarball's owners and capabilities are extracted as they are), mke2fs,
#         sgdisk (gdisk), mkfs.vfat and mtools, grub-mkimage (grub-common), qemu-img, python3.
#         No loop device and no mount: every part is written into the disk file at its offset.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
name=debian-12-standin-cloudimg-amd64.img

log() { printf 'base-img: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

tarball=$(bash "$here/build.sh")
key=$( { basename "$tarball"; cat "$here/build-img.sh"; } | sha256sum | cut -d' ' -f1)
cache=${MAILBAKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mailbake}/base
dir=$cache/img-$key

if [ -f "$dir/SHA256SUMS" ] && [ -f "$dir/$name" ]; then
    log "cached: $dir/$name"
    printf '%s\n' "$dir/$name"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || die "must run as root: the base's owners and file capabilities are extracted as they are"
for tool in mke2fs sgdisk mkfs.vfat mmd mcopy grub-mkimage qemu-img python3 chroot; do
    command -v "$tool" >/dev/null || die "$tool not found: run scripts/setup-host"
done

tmp=$(mktemp -d "$cache/.img-$key.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tree=$tmp/tree
mkdir "$tree"
start=$(date +%s)

# Fixed identifiers: Ubuntu's are random per build; fixed ones keep this stand-in's bytes the
# same for the same inputs.
root_uuid=0c1a0d1e-5a1d-4b0e-9f2a-7c3e1d5b2a10
root_partuuid=6a1e2b3c-4d5e-4f60-8a7b-9c0d1e2f3a41
disk_guid=2d3e4f50-6172-4839-a4b5-c6d7e8f90a12
esp_serial=5A5A0001

log "extracting $tarball"
tar --numeric-owner --xattrs --xattrs-include='*' -xpf "$tarball" -C "$tree"
getcap "$tree/usr/bin/ping" | grep -q cap_net_raw \
    || die "the base's /usr/bin/ping has no cap_net_raw: the tarball lost its xattrs (build.sh, iputils-ping)"

# Ubuntu's fstab, line for line.
printf '%s\n' \
    'LABEL=cloudimg-rootfs	/	 ext4	discard,errors=remount-ro	0 1' \
    'LABEL=UEFI	/boot/efi	vfat	umask=0077	0 1' > "$tree/etc/fstab"
mkdir -p "$tree/boot/efi" "$tree/boot/grub"

# The distribution's default settings, which grub-pc's postinst installs on Ubuntu (the base
# has only grub-pc-bin), then Ubuntu's cloud build's own on top (no menu wait, the kernel on
# the serial console too).
printf '%s\n' \
    'GRUB_DEFAULT=0' \
    'GRUB_TIMEOUT_STYLE=hidden' \
    'GRUB_TIMEOUT=0' \
    'GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`' \
    'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"' \
    'GRUB_CMDLINE_LINUX=""' > "$tree/etc/default/grub"
mkdir -p "$tree/etc/default/grub.d"
printf '%s\n' \
    '# Stand-in for the cloud image settings of Ubuntu'"'"'s cloud build (livecd-rootfs)' \
    'GRUB_TIMEOUT=0' \
    'GRUB_RECORDFAIL_TIMEOUT=0' \
    'GRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0"' \
    'GRUB_TERMINAL=console' \
    'GRUB_DISABLE_OS_PROBER=true' > "$tree/etc/default/grub.d/50-cloudimg-settings.cfg"

# grub-mkconfig asks grub-probe and grub-mkrelpath about the device that holds /boot. Ubuntu's
# build runs it with the disk attached to a loop device; here the answers for the disk being
# built stand in for the device (disk sda, root on its partition 1, GPT, ext4 with root_uuid),
# and the real tools are put back afterwards.
log "grub-mkconfig in the base"
# Debian puts grub-probe in /usr/sbin and grub-mkrelpath in /usr/bin.
stand_ins=(usr/sbin/grub-probe usr/bin/grub-mkrelpath)
for t in "${stand_ins[@]}"; do
    [ -f "$tree/$t" ] || die "the base has no /$t (grub-common)"
    mv "$tree/$t" "$tmp/${t##*/}.real"
done
cat > "$tree/usr/sbin/grub-probe" <<EOF
#!/bin/sh
# build-img.sh's stand-in for the disk being built; removed after grub-mkconfig.
set -eu
target=
for a in "\$@"; do
    case "\$a" in --target=*) target=\${a#--target=} ;; esac
done
case "\$target" in
    device) echo /dev/sda1 ;;
    disk) echo /dev/sda ;;
    fs) echo ext2 ;;
    fs_uuid) echo $root_uuid ;;
    fs_label) echo cloudimg-rootfs ;;
    partuuid) echo $root_partuuid ;;
    partmap) echo gpt ;;
    drive) echo '(hd0,gpt1)' ;;
    compatibility_hint) echo hd0,gpt1 ;;
    bios_hints|efi_hints) echo hd0,gpt1 ;;
    baremetal_hints) echo ahci0,gpt1 ;;
    hints_string) echo '--hint-bios=hd0,gpt1 --hint-efi=hd0,gpt1 --hint-baremetal=ahci0,gpt1' ;;
    abstraction|cryptodisk_uuid|msdos_parttype) ;;
    *) echo "grub-probe stand-in: no answer for --target=\$target" >&2; exit 1 ;;
esac
EOF
cat > "$tree/usr/bin/grub-mkrelpath" <<'EOF'
#!/bin/sh
# build-img.sh's stand-in: / is the root of its own filesystem, so a path is its own relpath.
printf '%s\n' "$1"
EOF
chmod 0755 "$tree/usr/sbin/grub-probe" "$tree/usr/bin/grub-mkrelpath"
# 10_linux names the root by UUID only if udev's /dev/disk/by-uuid link exists, as it does
# for the loop device Ubuntu's build uses; without it the kernel would get root=/dev/sda1.
mkdir -p "$tree/dev/disk/by-uuid"
: > "$tree/dev/disk/by-uuid/$root_uuid"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    chroot "$tree" grub-mkconfig -o /boot/grub/grub.cfg 2> "$tmp/mkconfig.log" \
    || { cat "$tmp/mkconfig.log" >&2; die "grub-mkconfig failed"; }
rm -r "$tree/dev/disk"
for t in "${stand_ins[@]}"; do
    mv -f "$tmp/${t##*/}.real" "$tree/$t"
done
for want in "search --no-floppy --fs-uuid --set=root $root_uuid" "root=UUID=$root_uuid ro"; do
    grep -qF "$want" "$tree/boot/grub/grub.cfg" \
        || die "grub-mkconfig's grub.cfg lacks '$want'"
done

# What grub-install copies for each platform: the modules GRUB loads from /boot/grub, and
# an empty environment block.
for platform in i386-pc x86_64-efi; do
    mkdir -p "$tree/boot/grub/$platform"
    cp "$tree/usr/lib/grub/$platform/"*.mod "$tree/usr/lib/grub/$platform/"*.lst "$tree/boot/grub/$platform/"
done
chroot "$tree" grub-editenv /boot/grub/grubenv create

log "root filesystem (ext4, cloudimg-rootfs)"
used_mib=$(du -sx --block-size=1M "$tree" | cut -f1)
# Free space like Ubuntu's (about a quarter of the filesystem), so an overlay fits as there.
root_mib=$(( used_mib * 13 / 10 + 256 ))
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mke2fs -q -t ext4 -L cloudimg-rootfs -U "$root_uuid" \
    -E "hash_seed=$root_uuid" -d "$tree" "$tmp/root.ext4" "${root_mib}M" >&2

log "ESP (vfat, UEFI) with GRUB for EFI"
mkfs.vfat -C -n UEFI -i "$esp_serial" "$tmp/esp.img" $(( 106 * 1024 )) >/dev/null
# The EFI GRUB image carries what it needs to find the root; its prefix is the ESP's
# EFI/ubuntu, whose grub.cfg hands over to the root filesystem's, as Ubuntu's does.
grub-mkimage -O x86_64-efi -d "$tree/usr/lib/grub/x86_64-efi" -p /EFI/ubuntu \
    -o "$tmp/BOOTX64.EFI" \
    part_gpt fat ext2 normal configfile search search_fs_uuid search_label linux echo test \
    gzio all_video efi_gop font gfxterm minicmd sleep
printf '%s\n' \
    "search.fs_uuid $root_uuid root" \
    "set prefix=(\$root)'/boot/grub'" \
    'configfile $prefix/grub.cfg' > "$tmp/esp-grub.cfg"
MTOOLS_SKIP_CHECK=1 mmd -i "$tmp/esp.img" ::/EFI ::/EFI/BOOT ::/EFI/ubuntu
MTOOLS_SKIP_CHECK=1 mcopy -i "$tmp/esp.img" "$tmp/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
MTOOLS_SKIP_CHECK=1 mcopy -i "$tmp/esp.img" "$tmp/esp-grub.cfg" ::/EFI/ubuntu/grub.cfg

log "GRUB for BIOS (core.img for partition 14)"
printf '%s\n' \
    "search --no-floppy --fs-uuid --set=root $root_uuid" \
    "set prefix=(\$root)/boot/grub" > "$tmp/bios-early.cfg"
grub-mkimage -O i386-pc -d "$tree/usr/lib/grub/i386-pc" -p /boot/grub -c "$tmp/bios-early.cfg" \
    -o "$tmp/core.img" biosdisk part_gpt ext2 search search_fs_uuid configfile normal

log "GPT disk: 14 BIOS boot, 15 ESP, 1 root (Ubuntu's order)"
root_sectors=$(( root_mib * 2048 ))
# 1 MiB before partition 14, 4 + 106 MiB for 14 and 15, the root, and 1 MiB for the backup GPT.
disk_mib=$(( 1 + 4 + 106 + root_mib + 1 ))
truncate -s "${disk_mib}M" "$tmp/disk.raw"
sgdisk --disk-guid="$disk_guid" \
    --new=14::+4M --new=15::+106M --new=1:: \
    --typecode=14:EF02 --typecode=15:EF00 --typecode=1:8300 \
    --partition-guid=14:8e9f0a1b-2c3d-4e5f-8a6b-7c8d9e0f1a14 \
    --partition-guid=15:9f0a1b2c-3d4e-4f50-9b7c-8d9e0f1a2b15 \
    --partition-guid="1:$root_partuuid" \
    "$tmp/disk.raw" >/dev/null
start_of() { sgdisk -i "$1" "$tmp/disk.raw" | awk '/^First sector:/ { print $3 }'; }
size_of() { sgdisk -i "$1" "$tmp/disk.raw" | awk '/^Partition size:/ { print $3 }'; }
p14=$(start_of 14); p15=$(start_of 15); p1=$(start_of 1)
if [ "$p14" -ge "$p15" ] || [ "$p15" -ge "$p1" ]; then
    die "partitions not in Ubuntu's order: 14@$p14 15@$p15 1@$p1"
fi
[ "$(size_of 1)" -ge "$root_sectors" ] || die "partition 1 ($(size_of 1) sectors) is smaller than the root filesystem ($root_sectors)"

dd if="$tmp/core.img" of="$tmp/disk.raw" bs=512 seek="$p14" conv=notrunc status=none
dd if="$tmp/esp.img" of="$tmp/disk.raw" bs=512 seek="$p15" conv=notrunc,sparse status=none
dd if="$tmp/root.ext4" of="$tmp/disk.raw" bs=1M seek=$(( p1 / 2048 )) conv=notrunc,sparse status=none
[ $(( p1 % 2048 )) -eq 0 ] || die "partition 1 does not start on a MiB boundary ($p1)"

# Sector 0: boot.img's code over the protective MBR (its partition table and signature stay),
# pointed at core.img in partition 14; core.img's first sector (diskboot) told where the rest of
# it is. grub-install does the same through a device.
python3 - "$tmp/disk.raw" "$tree/usr/lib/grub/i386-pc/boot.img" "$p14" <<'EOF'
import struct, sys
disk, boot_img, core_lba = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(boot_img, "rb") as f:
    code = f.read(0x1B8)
with open(disk, "r+b") as d:
    mbr = bytearray(d.read(512))
    mbr[:0x1B8] = code
    mbr[0x5C:0x64] = struct.pack("<Q", core_lba)  # where core.img starts
    mbr[0x64] = 0xFF                               # boot from the drive the BIOS booted
    mbr[0x66:0x68] = b"\x90\x90"                   # no floppy check
    d.seek(0)
    d.write(mbr)
    # diskboot's block list: the rest of core.img follows its first sector.
    d.seek(core_lba * 512 + 0x1F4)
    d.write(struct.pack("<Q", core_lba + 1))
EOF

log "qcow2"
qemu-img convert -f raw -O qcow2 -o compat=1.1 "$tmp/disk.raw" "$tmp/$name"
printf '%s *%s\n' "$(sha256sum "$tmp/$name" | cut -d' ' -f1)" "$name" > "$tmp/SHA256SUMS"
mkdir -p "$tmp/out"
mv "$tmp/$name" "$tmp/SHA256SUMS" "$tmp/out/"
rm -rf "$dir"
mv "$tmp/out" "$dir"
log "built in $(( $(date +%s) - start )) s: $dir/$name ($(du -h "$dir/$name" | cut -f1))"
printf '%s\n' "$dir/$name"
