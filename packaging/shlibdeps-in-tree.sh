#!/bin/sh
# Runs inside the build tree after venv-in-tree.sh: prints the Depends: entries for the shared libraries
# /opt/pirag's compiled code needs from Debian (libc6, libgomp1, libstdc++6, ...). Libraries bundled inside
# the wheels (numpy.libs/, llama_cpp/lib/, ...) belong to the package itself: dpkg-shlibdeps resolves them
# through their $ORIGIN RPATH once the files sit in a package build tree (debian/pirag/DEBIAN).
set -eu
# On the same file system as /opt (hard links; /tmp is a tmpfs under nspawn), removed at the end.
work=/opt/.shlibs
rm -rf "$work" && mkdir -p "$work/debian/pirag/DEBIAN" "$work/debian/pirag/opt" && cd "$work"
trap 'rm -rf "$work"' EXIT
touch debian/control
cp -al /opt/pirag debian/pirag/opt/pirag
find debian/pirag/opt/pirag -type f \( -name '*.so' -o -name '*.so.*' \) | sort > elf-files
# Private libraries are searched in every folder that holds one (llama-cpp-python also drops a copy of
# libllama-common without an RPATH into site-packages/lib).
set -- $(xargs -n1 dirname < elf-files | sort -u | sed "s|^|-l$work/|") $(sed 's/^/-e/' elf-files)
if ! dpkg-shlibdeps -O --ignore-missing-info -Tdebian/pirag.substvars "$@" >substvars 2>shlibdeps.log; then
    grep 'error' shlibdeps.log >&2
    exit 1
fi
sed -n 's/^shlibs:Depends=//p' substvars
