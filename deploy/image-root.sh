#!/bin/sh
# Gathers the file system of the session-bridge image: the daemon, the
# shared objects it loads and the loader (as ldd resolves them in the build
# stage), and the few files that libraries read at run time. deploy/Dockerfile
# runs it in its build stage; the runtime stage is FROM scratch and copies
# ROOT as it is, so the image holds no shell, no package manager and no
# library the daemon does not link.
#
# tests/deploy/test_image.py holds the built image to exactly this: the ELF
# closure of the binary plus an allowlist of the files written below. A file
# added here needs its reason in that allowlist too.
#
#   deploy/image-root.sh BINARY ROOT
set -eu
if [ $# -ne 2 ]; then
  echo "usage: $0 BINARY ROOT" >&2
  exit 2
fi
bin=$1
root=$2
# Numeric and fixed: Kubernetes' runAsNonRoot can only verify a numeric
# user, and deploy/k8s pins the same runAsUser.
id=10001

mkdir -p "$root"
# Merged /usr as in Debian 12: /lib and /lib64 are links into /usr, so the
# paths ldd prints (and the loader's path in the binary, /lib64/...) land
# where Debian keeps the files.
for d in /lib /lib32 /lib64 /libx32; do
  [ -L "$d" ] || continue
  target=$(readlink "$d")
  ln -s "$target" "$root$d"
  case $target in
    /*) mkdir -p "$root$target" ;;
    *) mkdir -p "$root/$target" ;;
  esac
done

mkdir -p "$root/usr/local/bin"
cp "$bin" "$root/usr/local/bin/session-bridge"

# ldd names every object the loader maps, the loader included: copied
# under those paths, as files (-L: the soname's target, named by the
# soname). A library ldd cannot find would fail at start, so it fails here.
libs=$(ldd "$bin")
if printf '%s\n' "$libs" | grep -q 'not found'; then
  printf 'image-root: unresolved libraries:\n%s\n' "$libs" >&2
  exit 1
fi
for so in $(printf '%s\n' "$libs" | grep -o '/[^ ]*'); do
  cp -L --parents "$so" "$root"
done

# CA certificates: libcurl (providers, webhooks) reads Debian's bundle at
# the path compiled into it; OpenSSL's default file, which librdkafka uses
# when ssl.ca.location is unset, is a link to the same bundle, as in Debian.
mkdir -p "$root/etc/ssl/certs"
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
openssldir=$(openssl version -d | sed 's/^OPENSSLDIR: "\(.*\)"$/\1/')
mkdir -p "$root$openssldir"
ln -s /etc/ssl/certs/ca-certificates.crt "$root$openssldir/cert.pem"

# The daemon's user, for the libraries that look it up (libcurl and
# Kerberos call getpwuid_r). Its shell names no file: there is none.
printf 'session-bridge:x:%s:%s::/nonexistent:/usr/sbin/nologin\n' "$id" "$id" >"$root/etc/passwd"
printf 'session-bridge:x:%s:\n' "$id" >"$root/etc/group"
# Without this file glibc asks DNS first and reads /etc/hosts only when
# DNS is unreachable; with it, /etc/hosts (which the container runtime
# writes) answers first, as on any Debian host.
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
# Where a library puts a temporary file; Kubernetes mounts an emptyDir over
# it because the root file system is read-only there.
mkdir -p "$root/tmp"
chmod 1777 "$root/tmp"
