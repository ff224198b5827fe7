#!/bin/sh
# Runs inside the build tree after venv-in-tree.sh: prints the Depends: entries for the shared libraries
# /opt/pirag's compiled code needs from Debian (libgomp1, libstdc++6, ...). Libraries bundled inside wheels
# (numpy.libs/, ...) belong to the package itself and are skipped.
set -eu
cd /tmp && rm -rf shlibs && mkdir -p shlibs/debian && cd shlibs
touch debian/control
find /opt/pirag -type f \( -name '*.so' -o -name '*.so.*' \) > elf-files
# -e for each object; bundled libs have no Debian shlibs info (--ignore-missing-info).
set -- $(sed 's/^/-e/' elf-files)
dpkg-shlibdeps -O --ignore-missing-info -l/opt/pirag "$@" 2>shlibdeps.log \
    | sed -n 's/^shlibs:Depends=//p'
