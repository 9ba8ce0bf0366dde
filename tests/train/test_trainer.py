import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from engines.files import read_checkpoint_meta as read_meta
from engines.model import load_checkpoint
from realtime.errors import RealtimeError
from realtime.cli.training import train_command
from tests.helpers import read_log, tiny
from train.fit import cross_validate
from train.trainer import build_net

pytestmark = pytest.mark.slow  # real processes, training or long media: not in the quick run

REPO = Path(__file__).parents[2]


def test_one_epoch_cpu_run_writes_everything(utk_dir, tmp_path):
    settings = tiny(utk_dir, tmp_path / "run", save=tmp_path / "model.safetensors", trained_on="fixture faces")
    summary = cross_validate(settings)
    fold = tmp_path / "run" / "fold_0"
    rows = read_log(fold / "epochs.csv")
    assert len(rows) == 1 and rows[0]["epoch"] == "1" and float(rows[0]["lr"]) > 0 and float(rows[0]["seconds"]) > 0
    assert 0.0 <= float(rows[0]["age_exact"]) <= 1.0 and float(rows[0]["mae"]) > 0
    for name in ("best.safetensors", "final.safetensors", "last.pt", "result.json"):
        assert (fold / name).is_file(), name
    for name in ("summary.json", "summary.md", "curves.png", "confusion_age.png", "confusion_gender.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0, name
    result = json.loads((fold / "result.json").read_text())
    n_val = sum(map(sum, result["age_confusion"]))
    assert n_val == sum(map(sum, result["gender_confusion"])) and 0 < n_val < 25
    assert summary["metrics"]["age_exact"]["per_fold"] == [result["metrics"]["age_exact"]]
    meta = read_meta(tmp_path / "model.safetensors")
    assert meta.trained and meta.trained_on == "fixture faces" and meta.input_size == 32
    assert all(v.dtype == torch.float16 for v in load_file(tmp_path / "model.safetensors").values() if v.is_floating_point())
    net = load_checkpoint(fold / "final.safetensors")
    assert net(torch.zeros(2, 3, 32, 32))[0].shape == (2, 8)


class Stop(Exception):
    pass


def stop_after_first_epoch(fold, row):
    if row["epoch"] == 1:
        raise Stop  # as if the run were killed after epoch 1's checkpoint


def test_resume_continues_exactly(utk_dir, tmp_path):
    straight = tiny(utk_dir, tmp_path / "straight", epochs=2)
    cross_validate(straight)
    killed = replace(straight, out=tmp_path / "killed")
    with pytest.raises(Stop):
        cross_validate(killed, on_epoch=stop_after_first_epoch)
    assert torch.load(tmp_path / "killed" / "fold_0" / "last.pt", weights_only=True)["epoch"] == 1
    assert not (tmp_path / "killed" / "fold_0" / "result.json").exists()
    cross_validate(replace(killed, resume=True))
    a, b = (read_log(tmp_path / run / "fold_0" / "epochs.csv") for run in ("straight", "killed"))
    assert [r["epoch"] for r in b] == ["1", "2"]
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    wa, wb = (load_file(tmp_path / run / "fold_0" / "final.safetensors") for run in ("straight", "killed"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    # a finished fold is not trained again on --resume
    final = tmp_path / "killed" / "fold_0" / "final.safetensors"
    mtime = final.stat().st_mtime_ns
    cross_validate(replace(killed, resume=True))
    assert final.stat().st_mtime_ns == mtime


def test_train_command_cross_validates_keeping_duplicates_together(utk_dir, tmp_path):
    out = tmp_path / "cv"
    args = ["--data", str(utk_dir), "--format", "utkface", "--out", str(out), "--folds", "3", "--epochs", "1",
            "--input-size", "32", "--batch-size", "8", "--threads", "1"]  # fmt: skip
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 0, result.output
    assert "| age group exact |" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["folds"] == [0, 1, 2]
    results = [json.loads((out / f"fold_{k}" / "result.json").read_text()) for k in range(3)]
    assert sum(sum(map(sum, r["age_confusion"])) for r in results) == 25  # each readable image validated once
    m = summary["metrics"]["age_exact"]
    assert m["mean"] == pytest.approx(np.mean(m["per_fold"]), abs=1e-4) and m["std"] >= 0
    assert "± " in (out / "summary.md").read_text()


def test_folds_in_separate_processes_make_one_summary(utk_dir, tmp_path):
    """--fold K trains only fold K; runs into the same --out add up to the whole k-fold summary."""
    out = tmp_path / "cv"
    base = ["--data", str(utk_dir), "--format", "utkface", "--out", str(out), "--folds", "3", "--epochs", "1",
            "--input-size", "32", "--batch-size", "8", "--threads", "1"]  # fmt: skip
    result = CliRunner().invoke(train_command, [*base, "--fold", "2"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("fold_*")) == ["fold_2"]
    assert json.loads((out / "summary.json").read_text())["folds"] == [2]
    first = (out / "fold_2" / "result.json").read_text()
    result = CliRunner().invoke(train_command, [*base, "--fold", "0", "--fold", "1"])
    assert result.exit_code == 0, result.output
    assert (out / "fold_2" / "result.json").read_text() == first  # the finished fold is kept, not retrained
    summary = json.loads((out / "summary.json").read_text())
    assert summary["folds"] == [0, 1, 2]
    results = [json.loads((out / f"fold_{k}" / "result.json").read_text()) for k in range(3)]
    assert sum(sum(map(sum, r["age_confusion"])) for r in results) == 25
    with pytest.raises(RealtimeError, match="--fold takes fold numbers 0 to 2"):
        tiny(utk_dir, out, folds=3, only_folds=(3,))
    with pytest.raises(RealtimeError, match="--fold"):
        tiny(utk_dir, out, folds=1, only_folds=(0,))


def test_train_command_reports_missing_data(tmp_path):
    result = CliRunner().invoke(train_command, ["--data", str(tmp_path / "nope"), "--format", "utkface"])
    assert isinstance(result.exception, RealtimeError) and "data directory not found" in str(result.exception)


def test_adience_cross_validation_uses_official_folds(adience_dir, tmp_path):
    summary = cross_validate(tiny(adience_dir, tmp_path / "ad", format="adience", folds=2))
    assert summary["folds"] == [0, 1]
    result = json.loads((tmp_path / "ad" / "fold_1" / "result.json").read_text())
    assert sum(map(sum, result["gender_confusion"])) == 5  # official fold 1: 6 faces listed, one missing on disk


def test_settings_and_pretrained_errors(utk_dir, tmp_path, monkeypatch):
    with pytest.raises(RealtimeError, match="--epochs"):
        tiny(utk_dir, tmp_path, epochs=0)
    with pytest.raises(RealtimeError, match="unknown architecture 'not_a_net'"):
        cross_validate(tiny(utk_dir, tmp_path / "x", arch="not_a_net"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RealtimeError, match="--pretrained"):
        build_net(tiny(utk_dir, tmp_path).meta(), pretrained=True)


DDP_SCRIPT = """
import json, os, sys
import torch.distributed as dist
from train.fit import cross_validate
from train.trainer import TrainSettings
s = TrainSettings(data=sys.argv[1], format="utkface", out=sys.argv[2], input_size=32, epochs=1, batch_size=4,
                  folds=1, holdout=0.3, threads=1, device="cpu")
summary = cross_validate(s)
rank, world = dist.get_rank(), dist.get_world_size()
with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as fh:
    json.dump({"world": world, "summary": bool(summary)}, fh)
dist.destroy_process_group()
"""


def test_ddp_two_processes_gloo(utk_dir, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(utk_dir), str(out)]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert [r["summary"] for r in ranks] == [True, False]  # rank 0 validates and writes
    assert len(read_log(out / "fold_0" / "epochs.csv")) == 1
