"""pyproject.toml, environment.yml and requirements.lock agree; the environment is the locked one; the CLI runs."""

import re
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _all_dependencies() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"]) + [
        d for extra in project.get("optional-dependencies", {}).values() for d in extra
    ]


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    deps = _all_dependencies()
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


def _lock() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            out[_name(name)] = version
    return out


def test_pins_match_between_files():
    """Every dependency is in the lock at a version its pyproject range admits, and environment.yml
    pins exactly the lock's version (torch's local-disk pin above all)."""
    from packaging.requirements import Requirement

    lock = _lock()
    deps = _all_dependencies()
    env_pins = {}
    for d in yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]:
        if isinstance(d, dict):
            for x in d["pip"]:
                name, _, version = x.partition("==")
                env_pins[_name(name)] = version
    for d in deps:
        req = Requirement(d)
        assert _name(req.name) in lock, f"{req.name} is not in requirements.lock"
        assert req.specifier.contains(lock[_name(req.name)]), (
            f"requirements.lock pins {req.name}=={lock[_name(req.name)]}, outside {d}"
        )
        assert env_pins.get(_name(req.name)) == lock[_name(req.name)], (
            f"environment.yml pins {req.name} differently from the lock"
        )
    assert lock["torch"] == "2.14.1" and lock["torchvision"] == "0.29.1"


def test_installed_environment_is_the_locked_one():
    """What make installed is exactly requirements.lock (a stale or hand-changed venv fails here)."""
    from importlib import metadata

    wrong = {}
    for name, version in _lock().items():
        try:
            got = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # platform-specific pins (CUDA wheels) may be absent elsewhere
        if got != version:
            wrong[name] = (got, version)
    assert not wrong, f"installed != requirements.lock: {wrong}"


def test_cli_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "adlib.cli", "--help"], capture_output=True, text=True, check=True)
    assert "data" in out.stdout and "reproduce" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "adlib.cli", "data", "info", "/nonexistent/root"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "/nonexistent/root" in bad.stderr


def test_library_needs_neither_the_notebook_nor_the_test_stack():
    """The core dependencies are what `import adlib` and its models need; papermill, JupyterLab,
    pytest and nbval are extras (`[notebooks]`, `[dev]`), and the version has one source."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(d) for d in project["dependencies"]}
    assert core.isdisjoint({"papermill", "jupyterlab", "ipykernel", "pytest", "nbval", "pytest-xdist"})
    assert set(project["optional-dependencies"]) >= {"notebooks", "dev"}
    assert "version" in project.get("dynamic", []) and "version" not in project
    from importlib import metadata

    import adlib

    assert metadata.version("adlib") == adlib.__version__


def test_citation_and_changelog_name_the_version():
    import adlib

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert str(cff["version"]) == adlib.__version__ and cff["license"] == "MIT"
    assert {"GLASS", "POUTA", "ADL", "ADTR"} <= {r["notes"].split(";")[0] for r in cff["references"]}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text()
