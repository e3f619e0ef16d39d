"""pyproject.toml and environment.yml name the same packages; the CLI entry point exists."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    conda, pip = set(), set()
    for d in env:
        if isinstance(d, dict):
            pip |= {_name(x) for x in d["pip"]}
        else:
            conda.add(_name(d))
    conda -= {"python", "pip"}
    assert conda.isdisjoint(pip)
    assert {_name(d) for d in deps} == conda | pip


def test_pins_match_between_files():
    """A version given in both files is the same (torch's pin above all)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    text = (ROOT / "environment.yml").read_text()
    for d in deps:
        assert d.replace(" ", "") in text.replace(" ", ""), f"{d} differs in environment.yml"


def test_cli_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "adlib.cli", "--help"], capture_output=True, text=True, check=True)
    assert "data" in out.stdout and "reproduce" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "adlib.cli", "data", "info", "/nonexistent/root"], capture_output=True, text=True)
    assert bad.returncode == 2 and "/nonexistent/root" in bad.stderr
