"""Issue 18: config overrides are parsed against their field's declared type, from the command line
(``--set``) and from Python, naming the key and the accepted values; unknown keys list the close
ones. Nothing trains here: a bad value is refused before any run starts."""

from __future__ import annotations

import pytest

from adlib.cli import main, parse_overrides
from adlib.models import build
from adlib.models.base import parse_field_value
from adlib.models.glass import GLASSConfig
from adlib.results import Job


def _train(tmp_path, *sets):
    args = ["train", "glass", "--dataset", "synth", "--category", "wood", "--out", str(tmp_path)]
    for s in sets:
        args += ["--set", s]
    return main(args)


@pytest.mark.parametrize(
    "text,value", [("no", False), ("off", False), ("0", False), ("False", False), ("yes", True), ("true", True)]
)
def test_boolean_fields_read_words_by_value(text, value):
    assert parse_overrides([f"las={text}"], "glass") == {"las": value}
    assert build("glass", "smoke", **parse_overrides([f"las={text}"], "glass")).cfg.las is value


@pytest.mark.parametrize(
    "item,needle",
    [
        ("las=maybe", "las expects a boolean"),
        ("epochs=1.5", "epochs expects an integer"),
        ("epochs=abc", "epochs expects an integer"),
        ("seed=abc", "seed expects an integer"),
        ("resize=abc", "resize expects an integer"),
        ("noise_std=big", "noise_std expects a number"),
    ],
)
def test_bad_values_are_named_on_one_line(tmp_path, capsys, item, needle):
    assert _train(tmp_path, item) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err and item.split("=")[1] in err
    assert not any(tmp_path.iterdir())  # refused before any run folder exists


def test_tuples_take_comma_lists_and_literals_and_none_where_allowed():
    assert parse_field_value(GLASSConfig, "layers", "layer2") == ("layer2",)
    assert parse_field_value(GLASSConfig, "layers", "layer2,layer3") == ("layer2", "layer3")
    assert parse_field_value(GLASSConfig, "layers", "('layer2', 'layer3')") == ("layer2", "layer3")
    assert parse_field_value(GLASSConfig, "crop", "None") is None
    assert parse_field_value(GLASSConfig, "crop", "128") == 128
    assert parse_field_value(GLASSConfig, "noise_std", "1e-2") == pytest.approx(0.01)
    with pytest.raises(ValueError, match="crop expects an integer or None"):
        parse_field_value(GLASSConfig, "crop", "big")
    # the same job as from Python: one run key
    a = Job.make("glass", "synth", "wood", "smoke", 0, **parse_overrides(["layers=layer2", "las=no"], "glass"))
    b = Job.make("glass", "synth", "wood", "smoke", 0, layers=("layer2",), las=False)
    assert a.key() == b.key()


def test_unknown_key_lists_the_close_ones(tmp_path, capsys):
    assert _train(tmp_path, "epoch=3") == 2
    err = capsys.readouterr().err
    assert "'epoch': did you mean 'epochs'?" in err


def test_python_overrides_of_the_wrong_kind_are_refused():
    with pytest.raises(ValueError, match=r"GLASSConfig.las = 'no': expected a boolean"):
        build("glass", "smoke", las="no")
    with pytest.raises(ValueError, match=r"GLASSConfig.epochs = 1.5: expected an integer"):
        build("glass", "smoke", epochs=1.5)
    assert build("glass", "smoke", epochs=2, noise_std=1).cfg.epochs == 2
