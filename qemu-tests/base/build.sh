#!/usr/bin/env bash
# Build (or reuse) the Debian 12 root tarball that mailbake's QEMU tests use as a stand-in for
# Ubuntu 22.04's cloud-image root tarball (which this workplace cannot download).
#
# Output: the path of the tarball on stdout; progress on stderr.
# Cache:  ${MAILBAKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mailbake}/base/<key>.tar, where key is
#         the sha256 of the suite, the sorted package list and this script, so editing any of
#         them builds a new base and a second call with the same inputs returns at once.
# Needs:  mmdebstrap, run as root (mode "root": ownership in the tarball must be real).
#
# The base configures nothing host-specific: hostname, network addresses, users and SSH keys
# come from the overlay and the cloud-init seed, as they would on top of Ubuntu's image.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
suite=bookworm
# mmdebstrap's own default mirror unless MAILBAKE_DEBIAN_MIRROR names one.
mirror=${MAILBAKE_DEBIAN_MIRROR:-}
# Fixed so that two builds of the same package set give the same mtimes in the tarball.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

log() { printf 'base: %s\n' "$*" >&2; }

# Package list without comments or blanks, sorted and unique: order in the file is irrelevant.
mapfile -t packages < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$here/packages.txt" | grep -v '^$' | LC_ALL=C sort -u)
if [ "${#packages[@]}" -eq 0 ]; then
    log "no packages in $here/packages.txt"
    exit 1
fi

key=$( { printf 'suite=%s\n' "$suite"; printf '%s\n' "${packages[@]}"; cat "$here/build.sh"; } | sha256sum | cut -d' ' -f1)
cache=${MAILBAKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mailbake}/base
out=$cache/$key.tar

if [ -f "$out" ]; then
    log "cached: $out"
    printf '%s\n' "$out"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root: mmdebstrap's root mode is what records real file ownership (root, _apt, systemd users) in the tarball"
    exit 1
fi
command -v mmdebstrap >/dev/null || { log "mmdebstrap not found: apt-get install mmdebstrap"; exit 1; }

mkdir -p "$cache"
# Temp file in the cache dir so the final rename is atomic and a failed build leaves nothing
# under the final name.
tmp=$(mktemp "$cache/.$key.XXXXXX.tar")
trap 'rm -f "$tmp"' EXIT

log "building $suite with ${#packages[@]} packages (takes a few minutes) -> $out"
start=$(date +%s)
include=$(IFS=,; printf '%s' "${packages[*]}")

# Hooks, in order:
# essential-hook: before the kernel is installed, tell initramfs-tools there is no resume
#   device, so the initrd does not wait for a swap partition that will never exist.
# customize-hook:
#   - cloud-init: only NoCloud (the seed disk / provider user-data) then None; render network
#     config as netplan, which netplan turns into systemd-networkd units, as on Ubuntu. The
#     file is named 95-… so it sorts after the package's 90_dpkg.cfg and wins.
#   - enable systemd-networkd and systemd-resolved (netplan's networkd backend needs both).
#   - remove state that must be unique per machine: SSH host keys (cloud-init regenerates them
#     on first boot), machine-id (systemd creates it on first boot), apt's lists.
#   - drop mmdebstrap's own apt options so the image's apt behaves like a normal system.
#   - LANG=C.UTF-8, Ubuntu's cloud image default (glibc has C.UTF-8 built in, so nothing is
#     generated).
#   - a provider-style sysctl file that turns IPv6 off, so the tests prove the overlay's
#     sysctl settings turn it back on (walkthrough step 3).
mmdebstrap \
    --mode=root \
    --variant=apt \
    --format=tar \
    --aptopt='APT::Install-Recommends "false"' \
    --include="$include" \
    --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" && echo RESUME=none > "$1/etc/initramfs-tools/conf.d/resume"' \
    --customize-hook='mkdir -p "$1/etc/cloud/cloud.cfg.d"' \
    --customize-hook='printf "%s\n" "# mailbake test base: seed-driven, netplan -> systemd-networkd as on Ubuntu" "datasource_list: [ NoCloud, None ]" "system_info:" "  network:" "    renderers: [ netplan ]" > "$1/etc/cloud/cloud.cfg.d/95-mailbake-base.cfg"' \
    --customize-hook='chroot "$1" systemctl enable systemd-networkd.service systemd-resolved.service' \
    --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
    --customize-hook=': > "$1/etc/machine-id"; rm -f "$1/var/lib/dbus/machine-id"' \
    --customize-hook='printf "%s\n" localhost > "$1/etc/hostname"' \
    --customize-hook='printf "%s\n" LANG=C.UTF-8 > "$1/etc/default/locale"' \
    --customize-hook='printf "%s\n" "# Like some VPS providers images: IPv6 off. The overlay must turn it back on." "net.ipv6.conf.all.disable_ipv6 = 1" "net.ipv6.conf.default.disable_ipv6 = 1" > "$1/etc/sysctl.d/50-provider-ipv6-off.conf"' \
    --customize-hook='rm -f "$1/etc/apt/apt.conf.d/99mmdebstrap"; rm -rf "$1"/var/lib/apt/lists/*' \
    "$suite" "$tmp" ${mirror:+"deb $mirror $suite main"} >&2

mv -f "$tmp" "$out"
trap - EXIT
log "built in $(( $(date +%s) - start )) s: $(du -h "$out" | cut -f1)"
printf '%s\n' "$out"
