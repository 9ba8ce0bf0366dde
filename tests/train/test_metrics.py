import math

import numpy as np
import pytest
import torch

from train import metrics
from train.losses import MaskedLoss, class_weights
from train.trainer import lr_at

NAN = math.nan


def test_age_exact_and_one_off_by_hand():
    pred = np.array([0, 1, 3, 7, 5, 2])
    true = np.array([0, 2, 1, 7, -1, 4])  # -1 unknown: left out
    assert metrics.age_exact(pred, true) == pytest.approx(2 / 5)
    assert metrics.age_one_off(pred, true) == pytest.approx(3 / 5)  # 0/0, 1/2, 7/7 within one


def test_gender_and_mae_mask_unknowns():
    assert metrics.gender_accuracy(np.array([0, 1, 1, 0]), np.array([0, 0, -1, 0])) == pytest.approx(2 / 3)
    pred = np.array([10.0, 20.0, 30.0], np.float32)
    assert metrics.mae(pred, np.array([12.0, NAN, 27.0], np.float32)) == pytest.approx(2.5)
    assert math.isnan(metrics.mae(pred, np.full(3, NAN, np.float32)))
    assert math.isnan(metrics.age_exact(np.array([1]), np.array([-1])))


def test_summary_gender_13plus_uses_exact_ages():
    s = metrics.summary(
        np.array([0, 0, 0]), np.array([0, 0, 0]),
        np.array([1, 0, 0]), np.array([1, 1, 0]),
        np.array([5.0, 30.0, 40.0]), np.array([5.0, 30.0, NAN]),
    )  # fmt: skip
    assert s["gender_acc"] == pytest.approx(2 / 3)
    assert s["gender_acc_13plus"] == 0.0  # only the 30-year-old qualifies, and is wrong


def test_confusion_rows_are_truth():
    cm = metrics.confusion(np.array([1, 1, 0, 2]), np.array([0, 1, 0, -1]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]


def test_bootstrap_interval_brackets_the_value():
    rng = np.random.default_rng(0)
    pred, true = rng.integers(0, 2, 400), rng.integers(0, 2, 400)
    lo, hi = metrics.bootstrap_ci((pred, true), metrics.gender_accuracy, samples=200)
    assert lo < metrics.gender_accuracy(pred, true) < hi and hi - lo < 0.15


def _outputs(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g), torch.randn(n, 2, generator=g), torch.rand(n, generator=g) * 60


def test_masked_loss_ignores_unknown_labels():
    age_logits, gender_logits, years = _outputs()
    age = torch.tensor([0, 3, -1, 7, 2, 5])
    gender = torch.tensor([1, -1, 0, 1, 0, 1])
    true_years = torch.tensor([1.0, 18.0, 30.0, NAN, 10.0, 40.0])
    loss_fn = MaskedLoss(years_weight=0.1)
    total, parts = loss_fn((age_logits, gender_logits, years), age, true_years, gender)
    known = age >= 0
    assert parts["age"] == pytest.approx(float(torch.nn.functional.cross_entropy(age_logits[known], age[known])), rel=1e-5)
    known = gender >= 0
    assert parts["gender"] == pytest.approx(float(torch.nn.functional.cross_entropy(gender_logits[known], gender[known])), rel=1e-5)
    known = ~torch.isnan(true_years)
    assert parts["years"] == pytest.approx(0.1 * float((years[known] - true_years[known]).abs().mean()), rel=1e-5)
    assert float(total) == pytest.approx(sum(parts.values()), rel=1e-5)


def test_masked_loss_all_unknown_is_zero_but_differentiable():
    age_logits, gender_logits, years = (t.requires_grad_() for t in _outputs(3))
    total, parts = MaskedLoss()((age_logits, gender_logits, years), torch.full((3,), -1), torch.full((3,), NAN), torch.full((3,), -1))
    assert float(total.detach()) == 0.0 and parts == {"age": 0.0, "gender": 0.0, "years": 0.0}
    total.backward()
    assert age_logits.grad is not None and float(age_logits.grad.abs().sum()) == 0.0


def test_class_weights_inverse_frequency():
    w = class_weights(np.array([0, 0, 0, 1, -1]), 3)
    assert w.tolist() == pytest.approx([4 / 3 / 2, 4 / 1 / 2, 0.0])


def test_one_cycle_schedule():
    lrs = [lr_at(s, 100, 1.0, 0.1) for s in range(101)]
    assert lrs[0] == pytest.approx(0.04) and max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 10
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[100] == pytest.approx(0.0, abs=1e-9)
