"""The distribution years head (--years-bins, DLDL): its target, its loss, its export."""

import pytest
import torch
from safetensors.torch import load_file

from engines.registry import create_engine
from engines.meta import ModelMeta
from engines.model import ProbabilityModel, create_model, load_checkpoint, save_checkpoint
from realtime.errors import RealtimeError
from tests.helpers import tiny
from train.fit import cross_validate
from train.losses import AGE_SIGMA, MaskedLoss, age_distribution

pytestmark = pytest.mark.slow  # real processes, training or long media: not in the quick run


def test_age_distribution_is_a_gaussian_around_the_age():
    d = age_distribution(torch.tensor([0.0, 37.0, 37.5, 250.0]), 101)
    assert d.shape == (4, 101) and torch.allclose(d.sum(1), torch.ones(4), atol=1e-6)
    assert d.argmax(1).tolist()[:2] == [0, 37] and d.argmax(1)[3] == 100  # beyond the last bin: clamped
    assert torch.allclose(d[1, 37 - 5 : 37], d[1, 38 : 38 + 5].flip(0))  # symmetric about the age
    mean = (d[1] * torch.arange(101)).sum()
    spread = ((d[1] * (torch.arange(101) - mean) ** 2).sum()).sqrt()
    assert float(mean) == pytest.approx(37.0, abs=1e-4) and float(spread) == pytest.approx(AGE_SIGMA, rel=1e-3)


def _outputs(years_logits: torch.Tensor):
    n = len(years_logits)
    ages = torch.arange(years_logits.shape[1], dtype=torch.float32)
    years = years_logits.softmax(1) @ ages
    return (torch.zeros(n, 8, requires_grad=True), torch.zeros(n, 2, requires_grad=True), years, years_logits)


def test_distribution_loss_is_least_at_the_target_and_pulls_towards_it():
    true = torch.tensor([8.0, 30.0, 71.0])
    labels = (torch.tensor([1, 4, 7]), true, torch.tensor([0, 1, 0]))
    loss_fn = MaskedLoss(years_weight=0.1)
    exact = (age_distribution(true, 101) + 1e-20).log().requires_grad_()
    _, at_target = loss_fn(_outputs(exact), *labels)
    # at the target the KL part is 0; what is left is the L1 of the (exact) expectation
    assert at_target["years"] == pytest.approx(0.0, abs=1e-4)
    wrong = (age_distribution(true + 15, 101) + 1e-20).log().requires_grad_()
    loss, off = loss_fn(_outputs(wrong), *labels)
    assert off["years"] > 1.5 + 1.0  # L1 0.1 * 15 plus the KL between Gaussians 15 years apart
    loss.backward()
    # the gradient lowers the scores of the ages around the wrong guess, raises the true ages'
    assert (wrong.grad[0, 23] > 0) and (wrong.grad[0, 8] < 0) and (wrong.grad[2, 71] < 0)
    # unknown ages add nothing, yet still give the head a (zero) gradient
    unknown = (labels[0], torch.full((3,), float("nan")), labels[2])
    logits = torch.randn(3, 101, requires_grad=True)
    loss, parts = loss_fn(_outputs(logits), *unknown)
    loss.backward()
    assert parts["years"] == 0.0 and logits.grad is not None


def test_a_distribution_head_outputs_its_expectation_on_every_backend(tmp_path):
    torch.manual_seed(0)
    net = create_model(meta=ModelMeta(input_size=48, years_bins=101, trained=True))
    for m in net.modules():  # batch-norm statistics of real-looking inputs, so features vary
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats(), setattr(m, "momentum", None)
    with torch.no_grad():
        net.train()(torch.randn(32, 3, 48, 48))
        net.years_head.weight.normal_(0, 1)  # spread the head so the expectation depends on the input
    path = save_checkpoint(net.eval(), tmp_path / "dldl.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.meta.years_bins == 101 and loaded.years_head.out_features == 101
    x = torch.randn(6, 3, 48, 48)
    with torch.no_grad():
        age, gender, years, logits = loaded(x, years_logits=True)
        want = ProbabilityModel(loaded)(x)[2].numpy()
    assert torch.allclose(years, logits.softmax(1) @ torch.arange(101.0), atol=1e-4)
    assert 0 <= want.min() and want.max() <= 100 and want.std() > 1  # varies with the input
    for backend in ("torch", "onnxruntime"):
        engine = create_engine(path, backend=backend)
        assert engine.meta.years_bins == 101
        got = engine.infer(x.numpy()).age_years
        assert got.shape == (6,) and abs(got - want).max() < 1e-2, backend


def test_fine_tuning_a_linear_head_model_into_a_distribution_head(utk_dir, tmp_path):
    start = tmp_path / "start.safetensors"
    cross_validate(tiny(utk_dir, tmp_path / "first", save=start, seed=5))
    out = tmp_path / "dldl.safetensors"
    cross_validate(tiny(utk_dir, tmp_path / "tuned", init=start, years_bins=101, lr=1e-12, save=out))
    want, got = load_file(start), load_file(out)
    assert got["years_head.weight"].shape[0] == 101 and want["years_head.weight"].shape[0] == 1
    convs = [k for k in want if k.endswith(".weight") and want[k].ndim == 4]
    assert convs and all(torch.allclose(got[k].float(), want[k].float(), atol=1e-3) for k in convs)
    assert load_checkpoint(out).meta.years_bins == 101
    with pytest.raises(RealtimeError, match="--years-bins must be 0 .* or at least 2, got 1"):
        tiny(utk_dir, tmp_path / "bad", years_bins=1)
    for bad in (1, -3, True, 2.5):
        with pytest.raises(RealtimeError, match="years_bins"):
            ModelMeta.from_dict({"years_bins": bad})
