"""Notebook profile defaults live in adlib.papers (no `if profile == ...` in the notebooks)."""

import importlib
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from adlib.papers.common import as_reported_rows, notebook_defaults, reproduced_on

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*/*.ipynb"))
CALL = re.compile(r"paper\.defaults\(\s*\"([^\"]+)\",\s*profile,\s*(.*?)\)", re.S)


def _code(nb: Path) -> str:
    cells = json.loads(nb.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_notebook_defaults_fill_only_what_is_left_empty():
    table = {"nb": {"smoke": {"seeds": [0], "categories": ["wood"]}, "paper": {"seeds": [0, 1, 2], "categories": None}}}
    assert notebook_defaults(table, "nb", "smoke", seeds=None, categories=None) == ([0], ["wood"])
    assert notebook_defaults(table, "nb", "paper", seeds=None, categories=["bottle"]) == ([0, 1, 2], ["bottle"])
    assert notebook_defaults(table, "nb", "smoke", seeds=[4]) == [4]  # one parameter: the value itself
    got = notebook_defaults(table, "nb", "smoke", seeds=None)
    got.append(9)  # a copy: the table is not changed through it
    assert table["nb"]["smoke"]["seeds"] == [0]
    with pytest.raises(ValueError, match=r"nb: no profile default for parameter\(s\) \['eps'\]"):
        notebook_defaults(table, "nb", "smoke", eps=None)
    with pytest.raises(ValueError, match="no notebook defaults for 'other' and profile 'smoke'"):
        notebook_defaults(table, "other", "smoke")


def test_reproduced_rows_keep_their_names_in_the_smoke_profile():
    frame = pd.DataFrame({"dataset": ["synth"], "category": ["wood"]})
    assert as_reported_rows(frame, "smoke", dataset="mvtec").equals(frame)
    assert as_reported_rows(frame, "paper", dataset="mvtec")["dataset"].tolist() == ["mvtec"]
    assert reproduced_on("smoke", "VisA") == "the built-in benchmark standing in for VisA"
    assert reproduced_on("paper", "VisA") == "VisA"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_notebooks_take_profile_defaults_from_the_papers_module(nb):
    """No notebook branches on the profile, and every `paper.defaults(...)` call a notebook makes
    resolves for both profiles (its parameters all have defaults in the paper module)."""
    code = _code(nb)
    assert not re.search(r"\bprofile\s*[!=]=", code), f"{nb.name} branches on the profile"
    module = importlib.import_module(f"adlib.papers.{nb.parent.name}")
    for name, args in CALL.findall(code):
        assert name == nb.stem, f"{nb.name} asks for the defaults of {name!r}"
        params = re.findall(r"(\w+)\s*=", args)
        for profile in ("smoke", "paper"):
            module.defaults(name, profile, **{p: None for p in params})
