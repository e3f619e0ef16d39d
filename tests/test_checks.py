"""Regression checks (stable verdict lines within a tolerance) and claims with spread."""

import json

import numpy as np
import pandas as pd
import pytest

from adlib import checks


@pytest.fixture
def refs(tmp_path, monkeypatch):
    monkeypatch.delenv(checks.ENV_UPDATE, raising=False)
    return tmp_path / "smoke.json"


def _table(a=97.5, b=54.0):
    return pd.DataFrame({"ADL": [b, 40.8], "Vanilla": [a, np.nan]}, index=pd.Index([0.0, 0.2], name="eps"))


def test_update_then_pass_prints_the_same_line(refs, monkeypatch):
    monkeypatch.setenv(checks.ENV_UPDATE, "1")
    first = checks.regression_check("study", _table(), "smoke", tolerance=5, path=refs)
    monkeypatch.delenv(checks.ENV_UPDATE)
    stored = json.loads(refs.read_text())["study"]
    assert stored["tolerance"] == 5 and stored["values"]["0.0 | Vanilla"] == 97.5 and len(stored["values"]) == 3
    # numbers moved by float noise on another machine: the same text
    again = checks.regression_check("study", _table(a=96.0, b=57.9), "smoke", tolerance=5, path=refs)
    assert (
        again.ok and str(again) == str(first) == "regression check 'study': PASS, 3 values within ±5 of the reference"
    )


def test_a_broken_method_fails_and_is_named(refs, monkeypatch):
    monkeypatch.setenv(checks.ENV_UPDATE, "1")
    checks.regression_check("study", _table(), "smoke", tolerance=5, path=refs)
    monkeypatch.delenv(checks.ENV_UPDATE)
    res = checks.regression_check("study", _table(a=13.0), "smoke", tolerance=5, path=refs)
    assert not res.ok and "FAIL" in str(res) and "0.0 | Vanilla: 97.50 -> 13.00" in str(res)
    assert res.outside == {"0.0 | Vanilla": (97.5, 13.0)}
    # just outside / just inside the band
    assert not checks.regression_check("study", _table(b=54.0 + 5.01), "smoke", tolerance=5, path=refs).ok
    assert checks.regression_check("study", _table(b=54.0 - 4.99), "smoke", tolerance=5, path=refs).ok


def test_missing_or_extra_values_fail(refs, monkeypatch):
    monkeypatch.setenv(checks.ENV_UPDATE, "1")
    checks.regression_check("s", {"a": 1.0, "b": 2.0}, "smoke", tolerance=1, path=refs)
    monkeypatch.delenv(checks.ENV_UPDATE)
    assert "b: missing" in str(checks.regression_check("s", {"a": 1.0}, "smoke", path=refs))
    assert "c: not in the reference" in str(
        checks.regression_check("s", {"a": 1.0, "b": 2.0, "c": 3.0}, "smoke", path=refs)
    )
    # NaN is "not computed", the same as missing
    assert not checks.regression_check("s", {"a": 1.0, "b": float("nan")}, "smoke", path=refs).ok


def test_no_reference_says_so(refs):
    res = checks.regression_check("t", {"a": 1.0}, "paper", path=refs)
    assert res.ok and "no stored reference for profile paper" in str(res)


def test_committed_references_are_well_formed():
    for path in checks.references_path("smoke").parent.glob("*.json"):
        for name, ref in json.loads(path.read_text()).items():
            assert ref["tolerance"] > 0 and ref["values"], f"{path.name}: {name}"
            assert all(np.isfinite(v) for v in ref["values"].values()), f"{path.name}: {name}"


@pytest.mark.parametrize(
    "a, b, verdict",
    [
        ([90, 91, 92], [80, 80, 81], "holds"),
        ([80, 80, 81], [90, 91, 92], "does not hold"),
        ([90, 80, 85], [85, 86, 84], "within noise"),
        ([85, 85, 85], [85, 85, 85], "within noise"),
    ],
)
def test_claim_verdicts(a, b, verdict):
    c = checks.claim("A > B", pd.Series(a, index=[0, 1, 2]), pd.Series(b, index=[0, 1, 2]))
    assert c.verdict == verdict
    d = np.subtract(a, b)
    assert c.mean == pytest.approx(d.mean()) and c.sd == pytest.approx(d.std(ddof=1))
    assert str(c).startswith("claim: A > B: ") and f"over 3 seeds) -> {verdict}" in str(c)


def test_claim_pairs_seeds_and_one_seed_has_no_verdict():
    c = checks.claim("A > B", pd.Series([90.0, 70.0], index=[0, 1]), pd.Series([80.0], index=[0]))
    assert list(c.diffs) == [10.0] and c.verdict.startswith("within noise (one seed")
    with pytest.raises(ValueError, match="no seed has both sides"):
        checks.claim("A > B", pd.Series([1.0], index=[0]), pd.Series([1.0], index=[1]))


def test_per_seed_means_over_categories():
    f = pd.DataFrame(
        {
            "label": ["m"] * 4,
            "category": ["a", "b", "a", "b"],
            "seed": [0, 0, 1, 1],
            "image_auroc": [0.9, 0.7, 0.6, 0.8],
        }
    )
    assert checks.per_seed(f, "m").to_dict() == pytest.approx({0: 80.0, 1: 70.0})
