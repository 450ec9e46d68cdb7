#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# libvirtd-private.sh DIR [--restart]: runs a libvirtd (and its virtlogd) of its own for the
# tests, as root, without touching the host's libvirt. Run it under
#   unshare -m --propagation private libvirtd-private.sh DIR
# so that libvirt's fixed state directories (/run/libvirt, /var/lib/libvirt, /var/log/libvirt,
# /var/cache/libvirt, /etc/libvirt) are bind mounts of folders under DIR/ns in this mount
# namespace only. The clients' socket is DIR/sock/libvirt-sock, reached from outside with
#   qemu+unix:///system?socket=DIR/sock/libvirt-sock
# libvirtd's pid file is DIR/libvirtd.pid, not /run/libvirtd.pid, so two instances can run at once.
# QEMU runs as root without a security driver (the test guest's files stay as they are);
# domains are type 'qemu' (TCG). libvirtd is exec'ed: the caller's pid is libvirtd's.
# --restart: enter an existing instance's namespace (nsenter --mount=/proc/VIRTLOGD_PID/ns/mnt)
# and start libvirtd again there (virtlogd and QEMU kept running).
set -eu
D=$1
if [ "${2:-}" = --restart ]; then
  exec libvirtd --config "$D/libvirtd.conf" --pid-file "$D/libvirtd.pid"
fi
mkdir -p "$D/sock" "$D/ns/etc"
for d in /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do
  mkdir -p "$D/ns$d" "$d"
  mount --bind "$D/ns$d" "$d"
done
cp -a /etc/libvirt/. "$D/ns/etc/"
mount --bind "$D/ns/etc" /etc/libvirt
cat >>/etc/libvirt/qemu.conf <<EOT
user = "root"
group = "root"
security_driver = "none"
EOT
cat >"$D/libvirtd.conf" <<EOT
unix_sock_dir = "$D/sock"
unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:stderr"
EOT
virtlogd -d --pid-file "$D/virtlogd.pid"
exec libvirtd --config "$D/libvirtd.conf" --pid-file "$D/libvirtd.pid"
