import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from engines.files import DEFAULT_WEIGHTS, read_checkpoint_meta as read_meta
from realtime.cli import cli
from realtime.errors import RealtimeError
from realtime.analyzer import AnalyzerSettings
from train.sheet import SheetSettings, contact_sheet

from tests.helpers import SAMPLES


def test_sheet_shows_the_model_inputs_of_every_face(detector_models, tmp_path):
    out = tmp_path / "sheet.png"
    settings = SheetSettings(SAMPLES / "people.mp4", out, AnalyzerSettings(backend="onnxruntime"), every=25, columns=3)
    result = contact_sheet(settings)
    sheet = cv2.imread(str(out))
    assert result.frames == 3 and result.faces >= 3  # frames 0, 25, 50; two faces in the sample
    size = read_meta(DEFAULT_WEIGHTS).input_size  # each tile is the model's input plus a caption strip
    rows = -(-result.faces // 3)
    assert sheet.shape[1] == 3 * (size + 2) and sheet.shape[0] > rows * (size + 2)
    assert sum(result.labels.values()) == result.faces
    assert all(label.split()[0] in ("0-2", "4-6", "8-12", "15-20", "25-32", "38-43", "48-53", "60-100") for label in result.labels)


def test_sheet_cli_and_its_errors(detector_models, tmp_path):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 90, np.uint8))
    runner = CliRunner()
    done = runner.invoke(cli, ["sheet", str(blank), "-o", str(tmp_path / "s.png")])
    assert done.exit_code == 1 and "no faces found" in done.output
    done = runner.invoke(cli, ["sheet", str(SAMPLES / "people.jpg"), "-o", str(tmp_path / "s.png"), "--scale", "0.5"])
    assert done.exit_code == 0, done.output
    assert "faces from 1 frames" in done.output and cv2.imread(str(tmp_path / "s.png")) is not None
    with pytest.raises(RealtimeError, match=".jpg or .png"):
        SheetSettings(blank, tmp_path / "s.mp4")
    with pytest.raises(RealtimeError, match="--every"):
        SheetSettings(blank, tmp_path / "s.png", every=0)


def test_sheet_never_overwrites_its_input(detector_models, tmp_path):
    image = tmp_path / "people.jpg"
    image.write_bytes((SAMPLES / "people.jpg").read_bytes())
    before = image.read_bytes()
    with pytest.raises(RealtimeError, match="that is the input"):
        contact_sheet(SheetSettings(image, image))
    assert image.read_bytes() == before
