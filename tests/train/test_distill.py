"""Fine-tuning from a checkpoint (--init) and knowledge distillation (--teacher)."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors.torch import load_file

from engines.files import DEFAULT_ONNX
from engines.meta import ModelMeta
from engines.model import create_model, save_checkpoint
from realtime.errors import RealtimeError
from tests.helpers import read_log, tiny
from realtime.cli.training import train_command
from train.fit import cross_validate
from train.losses import MaskedLoss, Teachers

pytestmark = pytest.mark.slow  # real processes, training or long media: not in the quick run


def batch(n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    age_logits = torch.randn(n, 8, generator=g, requires_grad=True)
    gender_logits = torch.randn(n, 2, generator=g, requires_grad=True)
    years = (torch.rand(n, generator=g) * 80).requires_grad_()
    age_group = torch.arange(n) % 8
    gender = torch.arange(n) % 2
    true_years = torch.rand(n, generator=g) * 80
    return (age_logits, gender_logits, years), age_group, true_years, gender


def test_teachers_that_agree_with_the_labels_teach_the_labels():
    outputs, age_group, true_years, gender = batch()
    loss_fn = MaskedLoss(label_smoothing=0.0, years_weight=0.1)
    plain, _ = loss_fn(outputs, age_group, true_years, gender)
    agreeing = (F.one_hot(age_group, 8).float(), F.one_hot(gender, 2).float(), true_years)
    for distill in (0.0, 0.3, 1.0):
        mixed, _ = loss_fn(outputs, age_group, true_years, gender, agreeing, distill)
        assert torch.allclose(mixed, plain, atol=1e-5), distill
    # teachers that disagree change the loss in proportion to their weight
    flipped = (F.one_hot((age_group + 4) % 8, 8).float(), F.one_hot(1 - gender, 2).float(), true_years + 20)
    losses = [float(loss_fn(outputs, age_group, true_years, gender, flipped, d)[0].detach()) for d in (0.0, 0.5, 1.0)]
    assert losses[0] == pytest.approx(float(plain.detach()), abs=1e-5)
    assert losses[1] == pytest.approx((losses[0] + losses[2]) / 2, abs=1e-4) and losses[2] != pytest.approx(losses[0])


def test_teachers_teach_faces_without_labels():
    outputs, age_group, true_years, gender = batch()
    unknown = (torch.full_like(age_group, -1), torch.full_like(true_years, float("nan")), torch.full_like(gender, -1))
    loss_fn = MaskedLoss(years_weight=0.1)
    alone, _ = loss_fn(outputs, *unknown)
    assert float(alone.detach()) == 0.0
    soft = (torch.full((6, 8), 1 / 8), torch.tensor([[0.9, 0.1]]).repeat(6, 1), torch.full((6,), 30.0))
    taught, parts = loss_fn(outputs, *unknown, soft, 0.5)
    taught.backward()
    assert float(taught.detach()) > 0 and all(parts[k] > 0 for k in ("age", "gender", "years"))
    assert all(o.grad is not None and o.grad.abs().sum() > 0 for o in outputs)


def _checkpoint(path: Path, size: int, seed: int, **meta) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(create_model(meta=ModelMeta(input_size=size, trained=True, **meta)), path)


def test_teachers_average_their_probabilities_each_at_its_own_size(tmp_path):
    paths = (_checkpoint(tmp_path / "a.safetensors", 32, 1), _checkpoint(tmp_path / "b.safetensors", 48, 2))
    teachers = Teachers(paths, ModelMeta(input_size=32))
    teachers.train()  # a training loop's .train() must not put the teachers' batch norm in training mode
    x = torch.randn(4, 3, 32, 32)
    age, gender, years = teachers(x)
    a, b = teachers.nets
    xa, xb = x, F.interpolate(x, size=(48, 48), mode="bilinear", antialias=True)
    with torch.no_grad():
        (a_age, a_gender, a_years), (b_age, b_gender, b_years) = a(xa), b(xb)
    assert not teachers.training and not a.training
    assert torch.allclose(age, (a_age.softmax(1) + b_age.softmax(1)) / 2, atol=1e-6)
    assert torch.allclose(gender, (a_gender.softmax(1) + b_gender.softmax(1)) / 2, atol=1e-6)
    assert torch.allclose(years, (a_years + b_years) / 2, atol=1e-4)
    assert torch.allclose(age.sum(1), torch.ones(4), atol=1e-5) and not age.requires_grad
    other = _checkpoint(tmp_path / "c.safetensors", 32, 3, gender_labels=("f", "m"))
    with pytest.raises(RealtimeError, match="--teacher .*labels"):
        Teachers((other,), ModelMeta(input_size=32))


def test_init_starts_from_the_checkpoint(utk_dir, tmp_path):
    start = tmp_path / "start.safetensors"
    cross_validate(tiny(utk_dir, tmp_path / "first", save=start, seed=5))  # another initialisation than seed 0's
    # with a vanishing learning rate, a run from --init ends where it started; from scratch it does not
    for name, init in (("tuned", start), ("scratch", None)):
        cross_validate(tiny(utk_dir, tmp_path / name, init=init, lr=1e-12))
    want = load_file(start)
    tuned, scratch = (load_file(tmp_path / n / "fold_0" / "final.safetensors") for n in ("tuned", "scratch"))
    convs = [k for k in want if k.endswith(".weight") and want[k].ndim == 4]
    assert convs and all(torch.allclose(tuned[k], want[k].float(), atol=1e-5) for k in convs)
    assert not all(torch.allclose(scratch[k], want[k].float(), atol=1e-2) for k in convs)
    with pytest.raises(RealtimeError, match=r"--init .*\(mobilenetv3_small_100\).*\(mobilenetv3_large_075\)"):
        cross_validate(tiny(utk_dir, tmp_path / "wrong", init=start, arch="mobilenetv3_large_075"))


def test_train_command_distils_and_reports_bad_options(utk_dir, tmp_path):
    teacher = tmp_path / "teacher.safetensors"
    cross_validate(tiny(utk_dir, tmp_path / "teacher", save=teacher, epochs=2))
    common = ["--data", str(utk_dir), "--format", "utkface", "--folds", "1", "--holdout", "0.3", "--epochs", "1",
              "--input-size", "32", "--batch-size", "8", "--threads", "1"]  # fmt: skip
    losses = {}
    for distill in ("0", "1"):
        out = tmp_path / f"kd{distill}"
        args = common + ["--out", str(out), "--init", str(teacher), "--teacher", str(teacher), "--teacher", str(teacher), "--distill", distill]
        result = CliRunner().invoke(train_command, args)
        assert result.exit_code == 0, result.output
        losses[distill] = float(read_log(out / "fold_0" / "epochs.csv")[0]["train_loss"])
        settings = json.loads((out / "settings.json").read_text())
        assert settings["teachers"] == [str(teacher)] * 2 and settings["init"] == str(teacher)
    assert losses["0"] != pytest.approx(losses["1"], rel=1e-3)  # the teachers' targets are what it learned from
    (tmp_path / "model.onnx").write_bytes(DEFAULT_ONNX.read_bytes())  # a real model, but an export
    for extra, message in (
        (["--distill", "1.5"], "--distill must be between 0 and 1"),
        (["--teacher", str(tmp_path / "nope.safetensors")], "--teacher: model file not found"),
        (["--init", str(utk_dir / "2_0_0_20170100000.jpg.chip.jpg")], "--init: .*not a realtime checkpoint"),
        (["--init", str(tmp_path / "model.onnx")], "--init: .*model.onnx: an ONNX export has no trainable weights"),
    ):
        result = CliRunner().invoke(train_command, common + ["--out", str(tmp_path / "bad")] + extra)
        assert isinstance(result.exception, RealtimeError) and result.exception.args[0], extra
        assert __import__("re").search(message, str(result.exception)), (extra, str(result.exception))
