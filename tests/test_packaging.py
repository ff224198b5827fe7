"""Both install modes must work: the non-editable wheel (what packaging ships) holds every package."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAPPING = {"pirag.client": "client", "pirag.daemon": "daemon", "pirag.stress": "stress"}


def _package_dirs() -> set[str]:
    found = set()
    for prefix, folder in MAPPING.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder)
            found.add(".".join([prefix, *relative.parts]))
    return found


def test_every_package_directory_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert _package_dirs() <= listed, f"missing from pyproject packages: {_package_dirs() - listed}"


def test_the_wheel_holds_every_module(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("pirag-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for prefix, folder in MAPPING.items():
        for module in (REPO / folder).rglob("*.py"):
            relative = module.relative_to(REPO / folder)
            expected = "/".join([*prefix.split("."), *relative.parts])
            if "__pycache__" not in expected:
                assert expected in names, f"{expected} is not in the wheel"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    for script in ("pirag =", "pirag-mcp =", "pirag-stress ="):
        assert script in text
