#!/bin/sh
# mmdebstrap's --extract-hook (`python -m image rootfs` passes it): turns the extracted Debian
# packages into the image's root filesystem. The extract variant runs no maintainer script,
# so what those scripts would have done for a Python program is done here, and nothing else.
set -eu
root="$1"
archives="$root/var/cache/apt/archives"

# The package tools came only as dependencies of ca-certificates' configuration (debconf needs
# dpkg, dpkg needs tar); with no shell and no package database they could never run.
for package in debconf dpkg tar; do
  dpkg-deb --fsys-tarfile "$archives/${package}_"*.deb | tar -t | while read -r path; do
    case "$path" in */) ;; *) rm -f "$root/${path#./}" ;; esac
  done
done
# Nothing of apt or dpkg stays, nor what no program reads at run time, nor the host's name
# and resolver that mmdebstrap copied in (the container runtime provides both).
rm -rf "$root/etc/apt" "$root/etc/dpkg" "$root/var/lib/apt" "$root/var/lib/dpkg" \
  "$root/var/cache/apt" "$root/var/cache/debconf" "$root/var/log"/* \
  "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/info" \
  "$root/usr/share/locale" "$root/usr/share/lintian" "$root/usr/share/bug" \
  "$root/etc/hostname" "$root/etc/resolv.conf" "$root/etc/fstab"
find "$root/etc" "$root/usr" "$root/var" -depth -type d -empty -delete

# ca-certificates' postinst: the bundle, where OpenSSL looks by default (cafile).
bundle="$root/etc/ssl/certs/ca-certificates.crt"
mkdir -p "$root/etc/ssl/certs"
: > "$bundle"
find "$root/usr/share/ca-certificates" -name '*.crt' | LC_ALL=C sort | while read -r cert; do
  sed -e '$a\' "$cert" >> "$bundle"
done
ln -sf /etc/ssl/certs/ca-certificates.crt "$root/usr/lib/ssl/cert.pem"

# The operator's user: the uid and gid the Deployment's securityContext names.
printf '%s\n' 'root:x:0:0:root:/root:/usr/sbin/nologin' \
  'operator:x:10001:10001:agent-lifecycle-operator:/nonexistent:/usr/sbin/nologin' \
  > "$root/etc/passwd"
printf '%s\n' 'root:x:0:' 'operator:x:10001:' > "$root/etc/group"

# python3.11-minimal's postinst: the standard library's bytecode, by the image's own Python.
# Unchecked hashes: the root filesystem is read-only and image builders reset file times.
chroot "$root" /usr/bin/python3.11 -m compileall -q --invalidation-mode unchecked-hash \
  -x '/lib2to3/tests/' /usr/lib/python3.11
