"""The stress scenarios measure the daemon from outside: importing them must not import daemon code."""

from __future__ import annotations

import subprocess
import sys

MODULES = ["cli", "workers", "monitor", "anomaly", "report", "plots", "scenario_base", "scenario_concurrent",
           "scenario_large_files", "scenario_load", "scenario_churn", "scenario_leaks", "scenario_anomaly",
           "scenario_all", "scenario_quick", "scenario_crash"]


def test_scenarios_never_import_the_daemon() -> None:
    code = ("import importlib, sys\n"
            f"for name in {MODULES!r}:\n"
            "    importlib.import_module('pirag.stress.' + name)\n"
            "bad = sorted(m for m in sys.modules if m.startswith('pirag.daemon'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_every_scenario_is_a_command() -> None:
    from pirag.stress.cli import COMMANDS
    from pirag.stress.scenario_all import MODULES as SCENARIO_MODULES

    for name, module in SCENARIO_MODULES.items():
        assert COMMANDS[name][0] == module
    assert COMMANDS["quick"][0] == "scenario_quick" and COMMANDS["all"][0] == "scenario_all"
