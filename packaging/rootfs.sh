#!/bin/sh
# Cached Debian bookworm trees for building the .deb and for the real-systemd test.
#
#   packaging/rootfs.sh build DEST   # python3-dev, venv, compilers: where /opt/pirag is built
#   packaging/rootfs.sh boot  DEST   # systemd, dbus, python3 only: what a Pi owner has; booted by systemd-nspawn
#   packaging/rootfs.sh assemble DEST  # python3 + venv only: where a cross-built package's /opt/pirag is put
#                                    # together from ready wheels (nothing compiles in it)
#   packaging/rootfs.sh tarball KIND # print the cached tarball's path (creating it if needed)
#
# PIRAG_ARCH (default: this machine's) picks the Debian architecture: arm64 trees on an x86-64 machine run
# under qemu-user (qemu-user-static + binfmt-support; debootstrap's second stage is emulated: minutes).
#
# The first call debootstraps (about 40 s for `boot`, longer for `build`) and keeps a tarball under
# $PIRAG_CACHE (default /var/cache/pirag); later calls only unpack it. The tarball's name carries a hash of the
# package list, so changing the list below makes a new one. Needs root and the debootstrap package.
set -eu

CACHE=${PIRAG_CACHE:-/var/cache/pirag}
SUITE=bookworm
ARCH=${PIRAG_ARCH:-$(dpkg --print-architecture)}
# The mirror this machine's apt uses (sources.list.d), else Debian's own.
MIRROR=${PIRAG_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

packages_for() {
    case "$1" in
        # ca-certificates: pip inside the tree fetches from PyPI. cmake/ninja/g++: llama-cpp-python's build.
        build) echo "python3,python3-venv,python3-dev,python3-pip,build-essential,cmake,ninja-build,ca-certificates,libgomp1" ;;
        # What pirag's .deb depends on at run time must be here: the test installs it with no network.
        boot) echo "systemd,systemd-sysv,dbus,python3,libgomp1,libstdc++6,procps" ;;
        # dpkg-dev: dpkg-shlibdeps computes Depends from the arm64 libraries themselves.
        assemble) echo "python3,python3-venv,libgomp1,libstdc++6,dpkg-dev" ;;
        *) echo "unknown tree kind: $1 (build|boot|assemble)" >&2; exit 2 ;;
    esac
}

tarball() {
    kind=$1
    pkgs=$(packages_for "$kind")
    hash=$(printf '%s %s %s' "$SUITE" "$pkgs" "$ARCH" | sha256sum | cut -c1-12)
    suffix=""
    [ "$ARCH" = "$(dpkg --print-architecture)" ] || suffix="-$ARCH"
    tar="$CACHE/$SUITE-$kind$suffix-$hash.tar"
    if [ ! -s "$tar" ]; then
        command -v debootstrap >/dev/null || { echo "debootstrap is not installed" >&2; exit 3; }
        mkdir -p "$CACHE"
        work=$(mktemp -d "$CACHE/.debootstrap-$kind.XXXXXX")
        trap 'rm -rf "$work"' EXIT
        start=$(date +%s)
        debootstrap --arch="$ARCH" --variant=minbase --include="$pkgs" "$SUITE" "$work/root" "$MIRROR" >"$work/log" 2>&1 \
            || { tail -n 30 "$work/log" >&2; exit 1; }
        # Smaller tarball, and no stale apt lists in a tree meant to work offline.
        rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*_Packages
        tar -C "$work/root" --numeric-owner -cf "$tar.tmp" .
        mv "$tar.tmp" "$tar"
        echo "debootstrap $kind: $(( $(date +%s) - start )) s -> $tar" >&2
        rm -rf "$work"
        trap - EXIT
    fi
    echo "$tar"
}

case "${1:-}" in
    tarball) tarball "$2" ;;
    build|boot|assemble)
        tar=$(tarball "$1")
        dest=$2
        mkdir -p "$dest"
        tar -C "$dest" --numeric-owner -xf "$tar"
        ;;
    *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
