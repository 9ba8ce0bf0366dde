"""realtime archive on a real local Ray (one for the whole test run: 127.0.0.1, 2 CPUs,
no dashboard), real videos, real worker deaths (SIGKILL from the fault injection the
worker reads), a real SIGINT to a driver process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, SAMPLES, shared_path

PEOPLE = SAMPLES / "people.mp4"


@pytest.fixture(scope="session")
def ray_address(detector_models):
    """One local Ray for every test here: loopback only, 2 CPUs, no dashboard, its
    files under a short /tmp path (Unix socket paths are limited to ~100 bytes)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: the node binds 127.0.0.1
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # Ray reports nothing to anyone
    ray = pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", _temp_dir=temp, log_to_driver=False,
             configure_logging=False)
    assert all(node["NodeManagerAddress"] == "127.0.0.1" for node in ray.nodes())
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def _settings(out, **kw):
    from realtime.archive import ArchiveSettings

    kw.setdefault("analyzer", _analyzer())
    return ArchiveSettings(out=Path(out), **kw)


def _archive(inputs, out, **kw):
    from realtime.archive import archive

    return archive([str(i) for i in inputs], _settings(out, **kw))


def _faces(out: Path, key: str | None = None) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(out / "faces" / f"{key}.parquet" if key else out / "faces").to_pylist()


def _key(path: Path) -> str:
    from realtime.archive.inputs import source_key

    return source_key(path.resolve())


def _partials(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if ".partial" in p.name]


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def baseline(ray_address, tmp_path_factory):
    """An undisturbed archive of samples/people.mp4 (with --media)."""
    out = tmp_path_factory.mktemp("baseline")
    report = _archive([PEOPLE], out, media=True)
    assert report.exit_code == 0, report.problems()
    return out


def test_rows_equal_annotate_jsonl(baseline, tmp_path):
    """faces/KEY.parquet holds annotate's JSONL face for face; summary/KEY.json is its --summary."""
    import av
    import pyarrow.parquet as pq

    from realtime.pipeline import annotate
    from realtime.wiring import OutputSettings

    annotate(PEOPLE, OutputSettings(json=tmp_path / "a.jsonl", summary=tmp_path / "a.json"), _analyzer())
    lines = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    expected = [{"frame": r["frame"], "time": r["time"], **face} for r in lines for face in r["faces"]]
    key = _key(PEOPLE)
    rows = _faces(baseline, key)
    assert len(rows) == len(expected) > 100
    assert all(r["source"] == str(PEOPLE.resolve()) for r in rows)
    assert [_present(r, "source", "file") for r in rows] == [_present(e) for e in expected]
    # re-identification's person beside each track (empty until the track is embedded)
    assert [r["person_id"] for r in rows] == [e["person_id"] for e in expected]
    assert {r["person_id"] for r in rows} - {None} == {1, 2}
    summary = json.loads((baseline / "summary" / f"{key}.json").read_text())
    assert summary == json.loads((tmp_path / "a.json").read_text())
    tracks = pq.read_table(baseline / "tracks" / f"{key}.parquet").to_pylist()
    assert [t["track_id"] for t in tracks] == [t["track_id"] for t in summary["tracks"]]
    assert [t["person_id"] for t in tracks] == [t["person_id"] for t in summary["tracks"]] == [1, 2]
    assert all(0.5 <= t["gender_prob"] <= 1 and t["mean_age"] > 0 for t in tracks)
    (row,) = pq.read_table(baseline / "manifest.parquet").to_pylist()
    assert row["status"] == "ok" and row["frames"] == row["frames_expected"] == len(lines) and row["attempts"] == 1
    assert row["faces"] == len(rows) and row["people"] == summary["people"] and row["peak_rss_mb"] > 50
    with av.open(str(baseline / "media" / f"{key}.mp4")) as video:
        assert sum(1 for _ in video.decode(video=0)) == len(lines)
    run = json.loads((baseline / "run.json").read_text())
    assert len(run["model"]["sha256"]) == len(run["detector"]["sha256"]) == 64 and run["settings"]["media"] is True
    assert not _partials(baseline)


def _present(row: dict, *leave_out: str) -> dict:
    return {k: v for k, v in row.items() if v is not None and k not in leave_out}


def test_annotate_table_csv_is_the_same_rows(tmp_path, detector_models):
    """annotate --table FILE.csv: the per-face rows of --json, as text."""
    import csv

    from realtime.pipeline import annotate
    from realtime.wiring import OutputSettings

    annotate(PEOPLE, OutputSettings(json=tmp_path / "a.jsonl", table=tmp_path / "a.csv"), _analyzer())
    lines = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    with open(tmp_path / "a.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    faces = [face for r in lines for face in r["faces"]]
    assert len(rows) == len(faces)
    assert [json.loads(r["box"]) for r in rows] == [f["box"] for f in faces]
    assert [float(r["age"]) for r in rows] == [f["age"] for f in faces]
    assert [int(r["person_id"]) if r["person_id"] else None for r in rows] == [f["person_id"] for f in faces]
    assert [r for r in tmp_path.iterdir() if ".partial" in r.name] == []


@pytest.mark.slow  # two files through one worker (about 4 s); the row test stays quick
def test_a_worker_s_next_file_starts_its_tracks_and_people_again(tmp_path, detector_models):
    """One worker process, two files on its one loaded analyzer (the direct call, as a
    Ray worker makes it): the second file's rows equal annotate's JSONL of it run alone,
    track and person ids included (no person remembered from the first file)."""
    from realtime.archive.results import Layout
    from realtime.archive.worker import Job, archive_file
    from realtime.pipeline import annotate
    from realtime.wiring import OutputSettings

    other = tmp_path / "again.mp4"
    shutil.copy(PEOPLE, other)
    out = tmp_path / "out"
    Layout(out).create(False)
    results = [archive_file(Job(path, _key(path), out, _analyzer())) for path in (PEOPLE, other)]
    assert [r.status for r in results] == ["ok", "ok"] and results[1].people == 2
    annotate(other, OutputSettings(json=tmp_path / "a.jsonl"), _analyzer())
    lines = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    expected = [_present({"frame": r["frame"], "time": r["time"], **face}) for r in lines for face in r["faces"]]
    rows = [_present(r, "source", "file") for r in _faces(out, _key(other))]
    assert rows == expected and {r.get("person_id") for r in rows} - {None} == {1, 2}


def test_a_failed_input_is_not_retried_unless_it_changed_or_force(ray_address, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is a text file, not a video\n")
    out = tmp_path / "out"
    first = _archive([bad], out)
    assert first.count("failed") == 1 and first.exit_code == 1
    again = _archive([bad], out)  # it would fail again: not tried, said so, still exit 1
    assert again.submitted == 0 and again.skipped == 0 and len(again.failed_before) == 1 and again.exit_code == 1
    assert "1 failed before (not retried: --force)" in again.line()
    assert again.problems() == [f"failed before {bad.resolve()}: {first.rows[_key(bad)]['error']}"]
    forced = _archive([bad], out, force=True)
    assert forced.submitted == 1 and forced.count("failed") == 1
    bad.write_bytes(PEOPLE.read_bytes())  # repaired: another size and time, tried again
    repaired = _archive([bad], out)
    assert repaired.submitted == 1 and repaired.count("ok") == 1 and repaired.exit_code == 0
    import pyarrow.parquet as pq

    assert [r["status"] for r in pq.read_table(out / "manifest.parquet").to_pylist()] == ["ok"]


def test_sample_fps_analyses_five_frames_a_second(baseline, tmp_path):
    out = tmp_path / "out"
    report = _archive([PEOPLE], out, sample_fps=5)
    (row,) = report.rows.values()
    assert row["status"] == "ok" and row["frames"] == row["frames_expected"] == 75  # every frame decoded
    frames = sorted({r["frame"] for r in _faces(out)})
    assert frames == list(range(0, 75, 5))  # 25 fps: one in five analysed
    assert all(r["track_id"] in (1, 2) for r in _faces(out))  # the two people tracked across the gaps


@pytest.mark.slow  # three archive runs
def test_rerun_submits_nothing_force_redoes_other_settings_refused(baseline, tmp_path):
    from realtime.errors import RealtimeError

    out = tmp_path / "out"
    shutil.copytree(baseline, out)  # results as left by an earlier run (same path, same file)
    before = _mtimes(out)
    report = _archive([PEOPLE], out, media=True)
    assert report.submitted == 0 and report.skipped == 1 and report.exit_code == 0
    assert _mtimes(out) == before  # nothing rewritten
    with pytest.raises(RealtimeError, match="other settings.*min_score 0.5 -> 0.6.*--force"):
        _archive([PEOPLE], out, media=True, analyzer=_analyzer(min_score=0.6))
    assert _mtimes(out) == before
    report = _archive([PEOPLE], out, media=True, force=True)
    assert report.submitted == 1 and report.exit_code == 0
    key = _key(PEOPLE)
    faces = str(out / "faces" / f"{key}.parquet")
    assert _mtimes(out)[faces] != before[faces]
    assert _faces(out) == _faces(baseline)


def _analyzer(**kw):
    """The analysis of these tests: the defaults, with re-identification's model from ../shared."""
    from realtime.analyzer import AnalyzerSettings
    from realtime.reid import ReidSettings

    return AnalyzerSettings(reid=ReidSettings(model=shared_path("models", "teachers", "hse_faceres.onnx")), **kw)


@pytest.mark.slow  # real worker deaths and retries
def test_worker_killed_mid_file_is_retried_and_complete(baseline, tmp_path):
    out = tmp_path / "out"
    report = _archive([PEOPLE], out, media=True, faults={"people": "kill-once@30"})
    (row,) = report.rows.values()
    assert row["status"] == "ok" and row["attempts"] == 2, row
    assert (out / f".fault-{_key(PEOPLE)}").exists()  # the first attempt really died at frame 30
    assert _faces(out) == _faces(baseline)
    assert not _partials(out)


@pytest.mark.slow  # crashes, hangs and their timeouts (about 20 s)
def test_poison_crashes_damaged_fails_hang_times_out_others_ok(ray_address, tmp_path):
    videos = tmp_path / "in"
    videos.mkdir()
    for name in ("poison.mp4", "hang.mp4"):
        shutil.copy(PEOPLE, videos / name)
    (videos / "notes.mp4").write_text("this is a text file, not a video\n")
    damaged = bytearray(PEOPLE.read_bytes())
    damaged[20000:26000] = bytes(6000)  # zeros over ten frames' packets
    (videos / "damaged.mp4").write_bytes(damaged)
    inputs = [videos / "poison.mp4", PEOPLE, videos / "notes.mp4", videos / "hang.mp4", videos / "damaged.mp4"]
    out = tmp_path / "out"
    report = _archive(inputs, out, retries=1, file_timeout=20,
                      faults={"poison": "kill@5", "hang": "hang@3"})
    rows = {Path(r["source"]).name: r for r in report.rows.values()}
    assert rows["poison.mp4"]["status"] == "crashed" and rows["poison.mp4"]["attempts"] == 2
    assert rows["people.mp4"]["status"] == "ok"
    assert rows["notes.mp4"]["status"] == "failed" and rows["notes.mp4"]["attempts"] == 1
    assert "cannot open" in rows["notes.mp4"]["error"]
    assert rows["hang.mp4"]["status"] == "timeout" and rows["hang.mp4"]["attempts"] == 1
    assert rows["damaged.mp4"]["status"] == "failed" and "damaged: 65 of 75 frames" in rows["damaged.mp4"]["error"]
    assert report.exit_code == 1 and len(report.problems()) == 4
    # only the good file has results, and nothing partial is left
    assert sorted(p.name for p in (out / "faces").iterdir()) == [f"{_key(PEOPLE)}.parquet"]
    assert not _partials(out)


@pytest.mark.slow  # archive processes, one per exit code
def test_cli_exit_codes_and_inputs(ray_address, tmp_path):
    """The command: @list.txt and a folder, a usage error (2), a failed file (1), a dry run."""
    from click.testing import CliRunner

    from realtime.cli import cli

    videos = tmp_path / "in" / "sub"
    videos.mkdir(parents=True)
    shutil.copy(PEOPLE, videos / "a.mp4")
    (videos / "readme.txt").write_text("not a video, not searched")
    (tmp_path / "list.txt").write_text(f"# two inputs\n{tmp_path / 'in'}\n\n{PEOPLE}\n")
    runner = CliRunner()
    result = runner.invoke(cli, ["archive", f"@{tmp_path / 'list.txt'}", "--out", str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "2 files: 2 to do" in result.output and not (tmp_path / "out").exists()
    result = runner.invoke(cli, ["archive", str(tmp_path / "in" / "**" / "*.mp4"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "1 files: 1 ok" in result.output
    assert runner.invoke(cli, ["archive", str(PEOPLE), "--out", str(tmp_path / "o2"), "--workers", "0"]).exit_code == 2
    result = runner.invoke(cli, ["archive", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o3")])
    assert result.exit_code == 1 and "input not found" in result.output
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 1000)
    result = runner.invoke(cli, ["archive", str(tmp_path / "bad.mp4"), "--out", str(tmp_path / "o4")])
    assert result.exit_code == 1 and "failed" in result.output


@pytest.mark.slow  # a driver process, a SIGINT and a rerun
def test_sigint_driver_exits_130_leaves_no_partial_and_rerun_completes(ray_address, tmp_path):
    stage = shared_path("media", "stage_360p.mp4")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    driver = subprocess.Popen(
        [sys.executable, "-m", "realtime.cli", "archive", str(PEOPLE), str(stage), "--out", str(out),
         "--address", ray_address, "--workers", "1", "--reid-model", str(_analyzer().reid.model)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        stage_key, deadline = _key(stage), time.monotonic() + 120
        # people.mp4 done and stage_360p begun (its table is being written)
        while not ((out / "summary" / f"{_key(PEOPLE)}.json").exists()
                   and list((out / "faces").glob(f".{stage_key}.*.partial.parquet"))):
            assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()[0]
            time.sleep(0.05)
        time.sleep(0.5)
        driver.send_signal(signal.SIGINT)
        output, _ = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, output
    assert "Traceback" not in output and "[interrupted]" in output
    assert not _partials(out)
    assert not (out / "summary" / f"{stage_key}.json").exists()
    report = _archive([PEOPLE, stage], out)
    assert report.skipped == 1 and report.submitted == 1 and report.exit_code == 0
    assert {Path(r["source"]).name for r in report.rows.values()} == {"stage_360p.mp4"}


@pytest.mark.slow
def test_two_node_cluster_node_removed_mid_run(ray_address, tmp_path):
    """ray.cluster_utils.Cluster (its own Ray, in a child process): two 1-CPU nodes; the
    second is removed while it analyses a file; that file is retried on the head."""
    stage = shared_path("media", "stage_360p.mp4")
    script = ROOT / "tests" / "realtime" / "archive_cluster.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, str(script), str(stage), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("ROWS "))[5:])
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    assert max(r["attempts"] for r in rows) == 2, rows
    assert not _partials(tmp_path / "out")


def test_ray_and_pyarrow_load_only_with_archive():
    """The CLI and the pipeline never import Ray or pyarrow (the runtime install has neither)."""
    code = ("import sys, realtime.cli, realtime.pipeline, realtime.cli.archive; "
            "print(sorted(m for m in ('ray', 'pyarrow') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_re_identification_model_is_part_of_the_results_identity(tmp_path):
    """Another re-identification model gives other people: run.json records it by
    content, so a rerun with another model is refused (or redone with --force)."""
    import dataclasses

    from realtime.archive.driver import describe
    from realtime.archive.results import settings_differ

    faceres = shared_path("models", "teachers", "hse_faceres.onnx")
    other = tmp_path / "other.onnx"
    other.write_bytes(faceres.read_bytes()[:-1] + b"\0")  # a different file under the same kind of name
    base = _analyzer()
    runs = {name: describe(_settings(tmp_path / "out", analyzer=dataclasses.replace(base, reid=dataclasses.replace(base.reid, **kw))))
            for name, kw in {"faceres": {"model": faceres}, "other": {"model": other}, "off": {"enabled": False}}.items()}
    assert runs["faceres"]["settings"]["reid_model"] != runs["other"]["settings"]["reid_model"]
    assert runs["off"]["settings"]["reid_model"] is None
    assert any(change.startswith("reid_model") for change in settings_differ(runs["faceres"], runs["other"]))
    assert settings_differ(runs["faceres"], runs["faceres"]) == []


@pytest.mark.slow  # three files, each in a fresh worker process (the model loads three times)
def test_a_worker_process_is_replaced_after_files_per_worker_files(ray_address, tmp_path):
    """--files-per-worker N: Ray replaces a worker process after N files, so what one keeps
    between files stays bounded on archives of thousands; the manifest names each file's
    worker process (pid), and the results are those of one process."""
    videos = tmp_path / "in"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        shutil.copy(PEOPLE, videos / name)
    fresh = _archive(sorted(videos.iterdir()), tmp_path / "fresh", workers=1, files_per_worker=1)
    kept = _archive(sorted(videos.iterdir()), tmp_path / "kept", workers=1)
    assert fresh.exit_code == kept.exit_code == 0
    assert len({r["pid"] for r in fresh.rows.values()}) == 3
    assert len({r["pid"] for r in kept.rows.values()}) < 3  # by default a process goes on to the next file
    by_name = lambda out: sorted((Path(r["source"]).name, r["faces"], r["people"]) for r in out.rows.values())
    assert by_name(fresh) == by_name(kept)
