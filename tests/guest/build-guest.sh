#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# build-guest.sh OUTDIR [BIN...]: builds (and caches under OUTDIR) a bootable test guest from
# Debian packages, with no kernel installed on the host:
#   OUTDIR/vmlinuz        the Debian cloud kernel (bzImage)
#   OUTDIR/initramfs.gz   gzip cpio: static busybox, /init, the virtio modules, and every BIN
#                         given on the command line in /bin (our static guest-* programs)
# Idempotent: the kernel .deb is downloaded once (cached by package name), the initramfs is
# rebuilt only when an input is newer or the set of BINs changed. Prints nothing when cached.
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 OUTDIR [BIN...]" >&2; exit 2; }
OUT=$1; shift
HERE=$(cd "$(dirname "$0")" && pwd)
INIT=$HERE/init
BUSYBOX=/bin/busybox
# Load order matters: no modules.dep in the package, so dependencies come first.
MODULES=(
  drivers/virtio/virtio_ring.ko
  drivers/virtio/virtio.ko
  drivers/virtio/virtio_pci_legacy_dev.ko
  drivers/virtio/virtio_pci_modern_dev.ko
  drivers/virtio/virtio_pci.ko
  drivers/virtio/virtio_balloon.ko
  drivers/virtio/virtio_mem.ko
  drivers/char/virtio_console.ko
  drivers/block/virtio_blk.ko
  drivers/acpi/button.ko
  drivers/input/evdev.ko
)

say() { printf 'build-guest: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

mkdir -p "$OUT/debs"
OUT=$(cd "$OUT" && pwd)

# The versioned package behind the meta package moves with security updates: look it up.
# apt-cache takes ~1 s here, so the answer is kept until the package lists change.
kernel_package() {
  local key pkg
  key=$(stat -c %Y /var/lib/apt/lists 2>/dev/null || echo none)
  if [ -f "$OUT/kernel-package" ] && [ "$(head -n1 "$OUT/kernel-package")" = "$key" ]; then
    sed -n 2p "$OUT/kernel-package"
    return 0
  fi
  pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
    | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1)
  [ -n "$pkg" ] && printf '%s\n%s\n' "$key" "$pkg" >"$OUT/kernel-package"
  echo "$pkg"
}

fetch_deb() { # PKG: leaves OUT/debs/PKG.deb
  local pkg=$1 tmp
  [ -s "$OUT/debs/$pkg.deb" ] && return 0
  tmp=$(mktemp -d "$OUT/debs/dl.XXXXXX")
  if ! (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1); then
    say "apt-get download $pkg failed; running apt-get update and retrying"
    apt-get update -q >/dev/null || true
    (cd "$tmp" && apt-get download -q "$pkg" >/dev/null) || { rm -rf "$tmp"; die "cannot download $pkg"; }
  fi
  mv "$tmp"/*.deb "$OUT/debs/$pkg.deb"
  rm -rf "$tmp"
}

# Keeps only what the guest needs from the package (the full tree is ~140 MB, this ~15 MB).
extract_kernel() { # DEB DIR
  local tmp=$2.tmp m
  rm -rf "$tmp" "$2"
  dpkg-deb -x "$1" "$tmp"
  [ -f "$tmp/boot/vmlinuz-$ABI" ] || die "no boot/vmlinuz-$ABI in $1"
  mkdir -p "$tmp.keep/boot"
  cp "$tmp/boot/vmlinuz-$ABI" "$tmp/boot/config-$ABI" "$tmp.keep/boot/"
  for m in "${MODULES[@]}"; do
    mkdir -p "$tmp.keep/lib/modules/$ABI/kernel/${m%/*}"
    cp "$tmp/lib/modules/$ABI/kernel/$m" "$tmp.keep/lib/modules/$ABI/kernel/$m" || die "module $m missing in $1"
  done
  rm -rf "$tmp"
  touch "$tmp.keep/.done"
  mv "$tmp.keep" "$2"
}

# Extracts the kernel package once; OUT/kernel -> kernel-PKG. Sets KDIR and ABI.
kernel() {
  local pkg
  pkg=$(kernel_package)
  if [ -z "$pkg" ]; then
    # No apt metadata (offline): reuse whatever kernel was extracted last.
    [ -e "$OUT/kernel/.done" ] || die "cannot resolve linux-image-cloud-amd64 (apt-cache depends) and no cached kernel"
    pkg=$(basename "$(readlink "$OUT/kernel")"); pkg=${pkg#kernel-}
  fi
  KDIR=$OUT/kernel-$pkg
  ABI=${pkg#linux-image-}
  if [ ! -e "$KDIR/.done" ]; then
    fetch_deb "$pkg"
    say "extracting $pkg"
    extract_kernel "$OUT/debs/$pkg.deb" "$KDIR"
  fi
  ln -sfn "kernel-$pkg" "$OUT/kernel"
  if [ ! "$OUT/vmlinuz" -nt "$KDIR/.done" ]; then
    cp "$KDIR/boot/vmlinuz-$ABI" "$OUT/vmlinuz.tmp" && mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
  fi
}

# True when the initramfs must be (re)built: missing, an input newer, or other inputs.
stale() {
  local f
  [ -f "$OUT/initramfs.gz" ] || return 0
  cmp -s "$OUT/inputs" "$OUT/inputs.new" || return 0
  for f in "$0" "$INIT" "$BUSYBOX" "$KDIR/.done" "$@"; do
    [ "$f" -nt "$OUT/initramfs.gz" ] && return 0
  done
  return 1
}

initramfs() {
  local root=$OUT/root m b
  { echo "$KDIR"; printf '%s\n' "$@"; } >"$OUT/inputs.new"
  if ! stale "$@"; then rm -f "$OUT/inputs.new"; return 0; fi
  rm -rf "$root"
  mkdir -p "$root"/{bin,sbin,dev,proc,sys,run,tmp,lib/modules}
  cp "$BUSYBOX" "$root/bin/busybox"
  ln -s busybox "$root/bin/sh"
  for m in "${MODULES[@]}"; do
    cp "$KDIR/lib/modules/$ABI/kernel/$m" "$root/lib/modules/" || die "module $m missing in $KDIR"
  done
  printf '%s\n' "${MODULES[@]##*/}" >"$root/lib/modules/load-order"
  install -m 0755 "$INIT" "$root/init"
  for b in "$@"; do
    [ -x "$b" ] || die "not an executable: $b"
    file_is_static "$b" || die "$b is not statically linked (the guest has no libc)"
    cp "$b" "$root/bin/"
  done
  (cd "$root" && find . -print0 | LC_ALL=C sort -z \
     | cpio --null -o -H newc --quiet -R 0:0) | gzip -6 >"$OUT/initramfs.gz.tmp"
  mv "$OUT/initramfs.gz.tmp" "$OUT/initramfs.gz"
  mv "$OUT/inputs.new" "$OUT/inputs"
  say "initramfs: $(du -k "$OUT/initramfs.gz" | cut -f1) KiB, $(($#)) extra program(s)"
}

# A dynamically linked ELF has a PT_INTERP program header (readelf comes with gcc's binutils).
file_is_static() {
  ! LC_ALL=C readelf -lW "$1" 2>/dev/null | grep -q 'INTERP'
}

kernel
initramfs "$@"
