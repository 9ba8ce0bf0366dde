"""--blur: every face box loses its detail, everything else is untouched, the JSON is
the same; on serve's snapshot too; serve --no-video shows no pixels; sheet refuses."""

from __future__ import annotations

import json

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from realtime.cli import cli
from tests.helpers import Served, shared_path

pytestmark = pytest.mark.slow  # real processes and the video: not in the quick run

MARGIN = 0.2  # BlurAnnotator's default, on each side
DETAILED = 30.0  # variance of the Laplacian (grey levels^2) of a face with detail


def laplacian(image: np.ndarray) -> np.ndarray:
    return cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F)


def blurred_regions(boxes, width: int, height: int, grow: int = 0) -> np.ndarray:
    """(H, W) True inside each box widened by the margin (and ``grow`` pixels)."""
    mask = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in boxes:
        w, h = x2 - x1, y2 - y1
        mask[max(0, int(y1 - MARGIN * h) - grow):int(y2 + MARGIN * h) + 1 + grow,
             max(0, int(x1 - MARGIN * w) - grow):int(x2 + MARGIN * w) + 1 + grow] = True
    return mask


def detail_ratios(source: np.ndarray, output: np.ndarray, undrawn: np.ndarray, boxes, least: float = 0.0) -> list[float]:
    """Per face: variance of the Laplacian of ``output`` over that of ``source``,
    inside the box (4 px in from its edge) where nothing was drawn (``undrawn``);
    faces whose source has less detail than ``least`` (variance) are left out."""
    keep = cv2.erode(undrawn.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    lap_src, lap_out = laplacian(source), laplacian(output)
    ratios = []
    for x1, y1, x2, y2 in boxes:
        inner = np.zeros_like(keep)
        inner[int(y1) + 4:int(y2) - 4, int(x1) + 4:int(x2) - 4] = True
        where = inner & keep
        assert where.sum() > 100, "the labels cover the face: nothing left to measure"
        if lap_src[where].var() >= least:
            ratios.append(lap_out[where].var() / lap_src[where].var())
    return ratios


@pytest.fixture(scope="module")
def photo(detector_models, tmp_path_factory):
    """group_6faces.jpg annotated to PNG with and without --blur."""
    folder = tmp_path_factory.mktemp("blur")
    source = shared_path("media", "group_6faces.jpg")
    runner = CliRunner()
    for name, extra in (("plain", []), ("blur", ["--blur"])):
        result = runner.invoke(cli, ["annotate", str(source), "-o", str(folder / f"{name}.png"), "--json", str(folder / f"{name}.jsonl"), *extra])
        assert result.exit_code == 0, result.output
    read = lambda name: json.loads((folder / f"{name}.jsonl").read_text())  # noqa: E731
    return {"source": cv2.imread(str(source)), "plain": cv2.imread(str(folder / "plain.png")),
            "blur": cv2.imread(str(folder / "blur.png")), "json": read("plain"), "json_blur": read("blur")}


def test_blur_removes_the_detail_of_every_face_and_nothing_else(photo):
    source, plain, blur = photo["source"], photo["plain"], photo["blur"]
    boxes = [f["box"] for f in photo["json"]["faces"]]
    assert len(boxes) >= 5 and source.shape == plain.shape == blur.shape
    height, width = source.shape[:2]
    outside = ~blurred_regions(boxes, width, height, grow=2)
    assert np.array_equal(blur[outside], plain[outside])  # pixel for pixel
    undrawn = (plain == source).all(2)  # not under a box outline or a label
    ratios = detail_ratios(source, blur, undrawn, boxes)
    assert max(ratios) < 0.05, ratios
    assert min(detail_ratios(source, plain, undrawn, boxes)) > 0.99  # without --blur the faces keep it
    assert photo["json_blur"] == photo["json"]  # the results are the same


def test_blur_in_the_annotated_video(detector_models, tmp_path):
    """stage_360p.mp4: each face box of the mp4 holds a small fraction of the source's
    detail; outside the boxes the video is the same as without --blur (to within the
    encoder's noise)."""
    source = shared_path("media", "stage_360p.mp4")
    runner = CliRunner()
    for name, extra in (("plain", []), ("blur", ["--blur"])):
        result = runner.invoke(cli, ["annotate", str(source), "-o", str(tmp_path / f"{name}.mp4"), "--json", str(tmp_path / f"{name}.jsonl"), *extra])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "plain.jsonl").read_text() == (tmp_path / "blur.jsonl").read_text()
    records = [json.loads(line) for line in (tmp_path / "plain.jsonl").read_text().splitlines()]

    def frames(path):
        with av.open(str(path)) as container:
            yield from (f.to_ndarray(format="bgr24") for f in container.decode(video=0))

    ratios, outside_diff, checked = [], [], 0
    for k, (src, plain, blur) in enumerate(zip(frames(source), frames(tmp_path / "plain.mp4"), frames(tmp_path / "blur.mp4"))):
        boxes = [f["box"] for f in records[k]["faces"] if min(f["box"][2] - f["box"][0], f["box"][3] - f["box"][1]) >= 30]
        if k % 10 or not boxes:
            continue
        checked += 1
        height, width = src.shape[:2]
        outside = ~blurred_regions([f["box"] for f in records[k]["faces"]], width, height, grow=16)
        error = lambda out: np.abs(out.astype(int) - src.astype(int))[outside].mean()  # noqa: E731
        outside_diff.append((error(blur), error(plain)))
        undrawn = (np.abs(plain.astype(int) - src.astype(int)) < 24).all(2)
        # a dark, out-of-focus face has little detail to remove: the encoder's own
        # noise would dominate the ratio
        ratios += detail_ratios(src, blur, undrawn, boxes, least=DETAILED)
    assert checked >= 10 and len(ratios) >= 20
    # outside the faces the blurred video is as close to the source as the plain one:
    # the same but for the encoder's noise
    blur_error, plain_error = np.array(outside_diff).T
    assert (np.abs(blur_error - plain_error) < 0.1 * plain_error).all(), outside_diff
    assert np.median(ratios) < 0.05 and max(ratios) < 0.3, ratios


def test_serves_snapshot_is_blurred_and_no_video_serves_no_pixels(photo):
    source = shared_path("media", "group_6faces.jpg")
    served = Served("--source", source, "--blur", "--jpeg-quality", "95")
    try:
        served.wait_for(lambda: served.json("/api/sources")[0]["frames"] >= 1, what="the photo analysed")
        status, headers, body = served.request("/api/sources/0/snapshot.jpg")
        assert status == 200
        boxes = [f["box"] for f in served.json("/api/sources/0/faces")["faces"]]
    finally:
        served.stop()
    assert boxes == [f["box"] for f in photo["json"]["faces"]]
    snapshot = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    undrawn = (photo["plain"] == photo["source"]).all(2)
    ratios = detail_ratios(photo["source"], snapshot, undrawn, boxes)
    assert max(ratios) < 0.1, ratios

    served = Served("--source", source, "--no-video")
    try:
        served.wait_for(lambda: served.json("/api/sources")[0]["frames"] >= 1, what="the photo analysed")
        assert served.json("/api/sources")[0]["video"] is False
        for path in ("/api/sources/0/snapshot.jpg", "/api/sources/0/stream.mjpg"):
            status, headers, body = served.request(path)
            assert status == 404 and b"--no-video" in body and headers["content-type"] == "application/json"
        assert len(served.json("/api/sources/0/faces")["faces"]) == len(boxes)
        assert len(served.json("/api/sources/0")["tracks"]) == len(boxes)
    finally:
        served.stop()


def test_sheet_refuses_to_blur(tmp_path, detector_models):
    result = CliRunner().invoke(cli, ["sheet", str(shared_path("media", "group_6faces.jpg")), "-o", str(tmp_path / "s.jpg"), "--blur"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: a contact sheet shows the faces themselves")
    assert not (tmp_path / "s.jpg").exists()
