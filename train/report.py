"""Cross-validation summary (JSON + Markdown, mean ± std over folds) and PNG plots."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from engines.meta import ModelMeta
from engines.writes import json_text, write_atomic
from train import metrics

log = logging.getLogger(__name__)

#: Headline metrics: key -> (title, format as percent).
HEADLINE = {
    "age_exact": ("age group exact", True),
    "age_one_off": ("age group 1-off", True),
    "gender_acc": ("gender", True),
    "gender_acc_13plus": ("gender, ages 13+", True),
    "mae": ("age MAE (years)", False),
}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof 1; 0 for one value) of the finite values; NaN if none."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if not len(v):
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def write_summary(results: list[dict], out: Path, meta: ModelMeta, data_description: str = "") -> dict:
    """Write ``summary.json``, ``summary.md``, ``confusion_age.png``, ``confusion_gender.png``
    and ``curves.png`` (per fold) under ``out``; return the summary."""
    out = Path(out)
    folds = [r["fold"] for r in results]
    table = {}
    for key in HEADLINE:
        mean, std = mean_std([r["metrics"].get(key) for r in results])
        table[key] = {"mean": mean, "std": std, "per_fold": [r["metrics"].get(key) for r in results]}
    age_cm = np.sum([np.array(r["age_confusion"]) for r in results], axis=0)
    gender_cm = np.sum([np.array(r["gender_confusion"]) for r in results], axis=0)
    summary = metrics.clean(
        {
            "folds": folds,
            "data": data_description,
            "meta": json.loads(meta.to_json()),
            "metrics": table,
            "age_confusion": age_cm,
            "gender_confusion": gender_cm,
            "epochs": max((len(r["history"]) for r in results), default=0),
        }
    )
    write_atomic(out / "summary.json", json_text(summary, indent=2), "--out")
    write_atomic(out / "summary.md", markdown(summary, meta), "--out")
    plot_curves(results, out / "curves.png")
    plot_confusion(age_cm, meta.age_labels, out / "confusion_age.png", "age group (summed over folds)")
    plot_confusion(gender_cm, meta.gender_labels, out / "confusion_gender.png", "gender (summed over folds)")
    log.info("summary written to %s", out / "summary.md")
    return summary


def markdown(summary: dict, meta: ModelMeta) -> str:
    folds = summary["folds"]
    lines = [
        f"# Validation summary: {meta.arch} at {meta.input_size} px",
        "",
        f"Folds: {len(folds)} ({', '.join(map(str, folds))}); epochs: {summary['epochs']}; data: {summary['data']}",
        "",
        "| metric | mean ± std over folds | per fold |",
        "| --- | --- | --- |",
    ]
    for key, (title, pct) in HEADLINE.items():
        m = summary["metrics"][key]
        lines.append(f"| {title} | {fmt(m['mean'], m['std'], pct)} | {', '.join(fmt(v, None, pct) for v in m['per_fold'])} |")
    lines += ["", "Age confusion (rows true, columns predicted, summed over folds):", ""]
    lines += confusion_markdown(summary["age_confusion"], meta.age_labels)
    lines += ["", "Gender confusion:", ""]
    lines += confusion_markdown(summary["gender_confusion"], meta.gender_labels)
    return "\n".join(lines) + "\n"


def fmt(value, std=None, percent: bool = True) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if percent:
        return f"{100 * value:.1f}%" + (f" ± {100 * std:.1f}" if std is not None and math.isfinite(std) else "")
    return f"{value:.2f}" + (f" ± {std:.2f}" if std is not None and math.isfinite(std) else "")


def confusion_markdown(cm, labels) -> list[str]:
    lines = ["| true \\ pred | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for label, row in zip(labels, cm):
        lines.append(f"| {label} | " + " | ".join(str(int(v)) for v in row) + " |")
    return lines


def plot_curves(results: list[dict], path: Path) -> None:
    """Loss, age accuracy, gender accuracy and MAE per epoch, one line per fold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("loss", ("train_loss", "val_loss")),
        ("age group exact", ("train_age_exact", "age_exact")),
        ("gender", ("train_gender_acc", "gender_acc")),
        ("MAE (years)", ("mae",)),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (title, keys) in zip(axes, panels):
        for r in results:
            epochs = [h["epoch"] for h in r["history"]]
            for key in keys:
                values = [h.get(key) if h.get(key) is not None else np.nan for h in r["history"]]
                ax.plot(epochs, values, ls="--" if key.startswith("train") else "-",
                        label=f"fold {r['fold']} {'train' if key.startswith('train') else 'val'}")  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(cm, labels, path: Path, title: str) -> None:
    """Row-normalised confusion matrix as a heat map with counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, np.float64)
    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(labels), 0.8 + 0.6 * len(labels)))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7, color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def eval_markdown(result: dict) -> str:
    """Markdown tables of an evaluation (:func:`train.evaluate.evaluate`'s result):
    headline metrics with 95% intervals, then per age group, gender and race group."""
    o, ci = result["overall"], result.get("ci95", {})

    def cell(row: dict, key: str, with_ci: bool = False) -> str:
        value = row.get(key)
        pct = HEADLINE[key][1]
        text = fmt(value, None, pct)
        lo, hi = (ci.get(key) or (None, None)) if with_ci else (None, None)
        if lo is not None and hi is not None:
            text += f" [{100 * lo:.1f}, {100 * hi:.1f}]" if pct else f" [{lo:.2f}, {hi:.2f}]"
        return text

    lines = ["| metric | value [95% bootstrap interval] |", "| --- | --- |"]
    lines += [f"| {title} | {cell(o, key, True)} |" for key, (title, _) in HEADLINE.items()]
    for section, title in (("by_age_group", "true age group"), ("by_gender", "true gender"), ("by_race", "race group (UTKFace code)")):
        if section not in result:
            continue
        lines += ["", f"| {title} | n | age exact | age 1-off | gender | gender 13+ | MAE |", "|---" * 7 + "|"]
        for name, row in result[section].items():
            lines.append(f"| {name} | {row['n']} | " + " | ".join(cell(row, k) for k in HEADLINE) + " |")
    return "\n".join(lines) + "\n"
