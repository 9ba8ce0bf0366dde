"""train.report (the cross-validation summary) and train.reid_pairs' arithmetic, in
the quick run (the training runs that write real summaries are marked slow)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engines.meta import ModelMeta
from train.reid_pairs import best_threshold, draw_pairs, rates
from train.report import HEADLINE, markdown, mean_std, write_summary


def fold(k: int, age_exact: float, mae: float | None) -> dict:
    metrics = {"age_exact": age_exact, "age_one_off": 0.9, "gender_acc": 0.8 + k / 100, "gender_acc_13plus": 0.85, "mae": mae}
    return {"fold": k, "metrics": metrics, "history": [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.2}] * 2,
            "age_confusion": np.eye(8, dtype=int).tolist(), "gender_confusion": [[3, 1], [0, 4]]}


def test_mean_and_sample_std_skip_what_is_not_a_number():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert mean_std([2.0, None, math.nan]) == (2.0, 0.0)
    assert all(math.isnan(v) for v in mean_std([None]))


def test_the_markdown_table(tmp_path):
    meta = ModelMeta()
    table = {key: {"mean": 0.6, "std": 0.1, "per_fold": [0.5, 0.7]} for key in HEADLINE}
    table["mae"] = {"mean": 6.0, "std": math.nan, "per_fold": [6.0, None]}
    summary = {"folds": [0, 1], "epochs": 2, "data": "a test set", "metrics": table,
               "age_confusion": np.eye(8, dtype=int), "gender_confusion": [[6, 2], [0, 8]]}
    text = markdown(summary, meta)
    assert "Folds: 2 (0, 1); epochs: 2; data: a test set" in text
    assert "| age group exact | 60.0% ± 10.0 | 50.0%, 70.0% |" in text and "| age MAE (years) | 6.00 | 6.00, n/a |" in text
    assert "| male | 0 | 8 |" in text


@pytest.mark.slow  # matplotlib and three plots
def test_the_summary_of_two_folds(tmp_path):
    pytest.importorskip("matplotlib")
    summary = write_summary([fold(0, 0.5, 6.0), fold(1, 0.7, None)], tmp_path, ModelMeta(), "a test set")
    assert summary["folds"] == [0, 1] and summary["epochs"] == 2
    assert summary["metrics"]["age_exact"]["mean"] == pytest.approx(0.6) and summary["metrics"]["mae"]["std"] == 0.0
    assert summary["gender_confusion"] == [[6, 2], [0, 8]]
    assert json.loads((tmp_path / "summary.json").read_text())["metrics"]["mae"]["per_fold"] == [6.0, None]
    text = (tmp_path / "summary.md").read_text()
    assert "| age group exact | 60.0% ± 14.1 | 50.0%, 70.0% |" in text and "| age MAE (years) | 6.00 ± 0.00 | 6.00, n/a |" in text
    assert all((tmp_path / f).stat().st_size > 0 for f in ("curves.png", "confusion_age.png", "confusion_gender.png"))


def test_pairs_threshold_and_rates():
    groups = {"a": ["a1", "a2", "a3"], "b": ["b1"], "c": ["c1", "c2"]}
    pairs = draw_pairs(groups, 20, np.random.default_rng(0))
    same, other = pairs[:20], pairs[20:]
    assert all(a != b and a[0] == b[0] and s for a, b, s in same)  # two photos of one person
    assert all(a[0] != b[0] and not s for a, b, s in other)  # two people
    sims = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.75])
    truth = np.array([True, True, True, False, False, False])
    assert best_threshold(sims, truth) == pytest.approx(0.45)  # of two cuts as good, the lower
    assert rates(sims >= 0.45, truth) == {"test_accuracy": round(5 / 6, 4), "false_match_rate": round(1 / 3, 4), "miss_rate": 0.0}
