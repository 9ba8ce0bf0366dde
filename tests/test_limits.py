"""The one table of limits (engines.limits): every CLI option a table entry names is
checked by it, as a usage error before any work, and the settings the library builds
refuse the same value with the same range."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from engines.errors import RealtimeError
from engines.limits import LIMITS
from realtime.cli import cli
from realtime.cli.options import Limited


def options():
    """(command, option) for every option of every command."""
    for name, command in cli.commands.items():
        for param in command.params:
            if isinstance(param, click.Option):
                yield name, param


#: options that share a table entry's name but not its meaning
OTHER_MEANING = {"archive --workers": "Ray tasks at once, not DataLoader processes"}


def test_every_option_the_table_names_is_checked_by_the_table():
    unchecked = [f"{name} {param.opts[0]}" for name, param in options()
                 if param.name in LIMITS and not (isinstance(param.type, Limited) and param.type.key == param.name)]
    unchecked = [u for u in unchecked if u not in OTHER_MEANING]
    assert unchecked == []
    assert all(param.type.key in LIMITS for _, param in options() if isinstance(param.type, Limited))


@pytest.mark.parametrize("args, message", [
    (["sheet", "x.mp4", "-o", "s.png", "--scale", "10"], "'--scale': '10': expected 0.25 to 8"),
    (["sheet", "x.mp4", "-o", "s.png", "--every", "0"], "'--every': '0': expected 1 to"),
    (["sheet", "x.mp4", "-o", "s.png", "--columns", "nan"], "'--columns': 'nan' is not an integer"),
    (["calibrate", "m.safetensors", "--data", "d", "--format", "csv", "-o", "o.safetensors", "--target", "1"],
     "'--target': '1': expected 0.5 to under 1"),
    (["calibrate", "m.safetensors", "--data", "d", "--format", "csv", "-o", "o.safetensors", "--context", "0.5"],
     "'--context': '0.5': expected 1 to 8"),
    (["convert", "--max-batch", "0"], "'--max-batch': '0': expected 1 to 4096"),
    (["convert", "--opt-batch", "inf"], "'--opt-batch': 'inf' is not an integer"),
    (["annotate", "x.mp4", "-o", "o.mp4", "--reid-min-face", "-1"], "'--reid-min-face': '-1': expected 0 to 4096"),
    (["archive", "x.mp4", "--out", "o", "--reid-min-contrast", "nan"],
     "'--reid-min-contrast': 'nan': expected a finite number, 0 to 128"),
])
def test_a_number_out_of_range_is_a_usage_error(args, message):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_the_settings_refuse_the_same_values(tmp_path):
    from engines.convert import ConvertSettings
    from realtime.reid import ReidSettings
    from train.calibrate import CalibrateSettings
    from train.evaluate import EvalSettings
    from train.sheet import SheetSettings

    with pytest.raises(RealtimeError, match=r"--scale 10: expected 0.25 to 8"):
        SheetSettings("x.mp4", tmp_path / "s.png", scale=10)
    with pytest.raises(RealtimeError, match=r"--max-faces 0: expected 1 to"):
        SheetSettings("x.mp4", tmp_path / "s.png", max_faces=0)
    (tmp_path / "labels.csv").write_text("file,age\n")
    scoring = EvalSettings(tmp_path, "csv", tmp_path / "p.csv", cropped=True)
    with pytest.raises(RealtimeError, match=r"--target 1.0: expected 0.5 to under 1"):
        CalibrateSettings(tmp_path / "m.safetensors", tmp_path / "o.safetensors", scoring, target=1.0)
    with pytest.raises(RealtimeError, match=r"--max-batch 0: expected 1 to 4096"):
        ConvertSettings(format="onnx", max_batch=0)
    with pytest.raises(RealtimeError, match=r"--reid-min-contrast 200: expected 0 to 128"):
        ReidSettings(min_contrast=200)
    with pytest.raises(RealtimeError, match=r"--reid-min-face -1: expected 0 to 4096"):
        ReidSettings(min_side=-1)
    with pytest.raises(RealtimeError, match=r"need 1 <= opt <= max"):  # a relation, beyond any one range
        ConvertSettings(format="onnx", opt_batch=16, max_batch=8)
