"""Refresh requirements.lock and environment.yml's pins (``make lock``).

Creates a fresh virtual environment, installs the project and its extras (``notebooks``, ``dev``, ``export``, ``cluster``, ``fast``) with pyproject.toml's version ranges
(no constraints), freezes every installed distribution (setuptools included, pip not) into ``requirements.lock`` and rewrites the
``==`` pins of ``environment.yml`` from it. Review the diff, rerun ``make test`` (numbers can move
with numpy/scipy/torch releases: refresh the notebooks with ``make notebooks`` when they do) and
commit both files together.

    python3 tools/lock.py [--python python3] [--keep]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
#: the extras make installs (and the lock covers)
EXTRAS = ("notebooks", "dev", "export", "cluster", "fast")
HEADER = """# The exact versions of every dependency (Linux x86-64, Python 3.11), complete: make installs them as they
# are (pip install --no-deps -r requirements.lock, then pip install --no-deps -e . and pip check).
# Refresh: make lock (fresh venv, unpinned install of pyproject.toml's ranges, pip freeze --all). environment.yml agrees.
"""


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0]


def read_lock(path: Path = ROOT / "requirements.lock") -> dict[str, str]:
    """``{normalised name: version}`` of a lock file."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            out[name.lower().replace("_", "-")] = version
    return out


def all_dependencies(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The requirements of pyproject.toml: ``dependencies`` and every optional extra."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return list(project["dependencies"]) + [
        d for extra in project.get("optional-dependencies", {}).values() for d in extra
    ]


def write_environment_pins(lock: dict[str, str], path: Path = ROOT / "environment.yml") -> None:
    deps = all_dependencies()
    names = {_name(d).lower(): _name(d) for d in deps}
    text = path.read_text()
    for key, name in names.items():
        text = re.sub(rf"(?m)^(\s*- ){re.escape(name)}==\S+$", rf"\g<1>{name}=={lock[key]}", text)
    path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--keep", action="store_true", help="keep the temporary venv")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="adlib-lock-"))
    try:
        subprocess.run([args.python, "-m", "venv", str(tmp / "venv")], check=True)
        pip = [str(tmp / "venv" / "bin" / "python"), "-m", "pip"]
        subprocess.run(
            [*pip, "install", "-q", "--disable-pip-version-check", "-e", f"{ROOT}[{','.join(EXTRAS)}]"], check=True
        )
        frozen = subprocess.run(
            [*pip, "freeze", "--all", "--exclude-editable"], check=True, capture_output=True, text=True
        ).stdout
        # --all: setuptools too (torch requires it); pip itself is the venv's
        lines = [ln for ln in frozen.splitlines() if ln and not ln.startswith(("-e", "adlib", "pip=="))]
        (ROOT / "requirements.lock").write_text(HEADER + "\n".join(lines) + "\n")
        write_environment_pins(read_lock())
        print(f"requirements.lock: {len(lines)} pins; environment.yml pins rewritten")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
