"""``pirag doctor``: the CPU, llama.cpp build, AMX, memory cgroup, model and disk facts (daemon code, no daemon
needed; a running daemon's status is read when it answers). See daemon/doctor.py."""

from __future__ import annotations

import argparse
import os

from .common import EXIT_ERROR, EXIT_OK, client_from, emit

SYSTEM_CONFIG = "/etc/pirag/pirag.toml"


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    doctor = subparsers.add_parser(
        "doctor", parents=[common], help="what llama.cpp uses on this CPU, the AMX switch, memory cgroup, model, disk",
        description="Checks what a slow or crashing install needs: the CPU features llama.cpp was built with and "
                    "uses (portable build: the CPU variant chosen), the AMX decision ($PIRAG_CPU_AMX), the memory "
                    "cgroup, the model file and its quantisation, free space in the state directory. Exit 1 when a "
                    "problem is found.")
    doctor.add_argument("--config", help=f"the daemon's TOML config (default: {SYSTEM_CONFIG} if it exists)")
    doctor.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from pirag.client.errors import PiragError
    from pirag.daemon.config import load_config
    from pirag.daemon.doctor import diagnose, render

    path = args.config or (SYSTEM_CONFIG if os.access(SYSTEM_CONFIG, os.R_OK) else None)
    config = load_config(path, socket=args.socket)
    status = None
    try:
        with client_from(args) as client:
            status = client.status()
    except PiragError:
        pass                                      # no daemon: doctor still reports what it can see
    report = diagnose(config, status)
    emit(args, report, render)
    return EXIT_ERROR if report["problems"] else EXIT_OK
