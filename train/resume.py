"""A fold's resume state (``last.pt``: weights, optimiser, scaler, feature projection,
random states, history), written whole after every epoch and read back by ``--resume``;
and the check that stops a run whose weights went non-finite. ``run`` is the fold's
:class:`train.fit._Run`."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from realtime.errors import RealtimeError

log = logging.getLogger(__name__)


def load_state(state_path: Path, run, generator: torch.Generator) -> tuple[int, list, float]:
    """Load the state after the last finished epoch: (epochs done, history, best val loss)."""
    try:  # weights_only: tensors and plain data, never a user's code
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        run.net.load_state_dict(state["model"])
        if run.feature is not None:
            run.feature.load_state_dict(state["feature"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        generator.set_state(state["loader_rng"])
        done = int(state["epoch"]), list(state["history"]), float(state["best"])
    except Exception:  # noqa: BLE001 - unpickling, a missing key, shapes of another run: one answer
        raise RealtimeError(f"--resume: {state_path} is not the resume state of this run (another run's settings, "
                            "or not written by realtime train); delete it, or train without --resume") from None
    log.info("fold %d: resumed from %s after epoch %d", run.fold, state_path, int(state["epoch"]))
    return done


def check_weights(net: nn.Module, fold: int, epoch: int) -> None:
    """Stop in one line when weights became NaN or infinite (nothing of the epoch saved)."""
    broken = [name for name, t in net.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if broken:
        raise RealtimeError(f"fold {fold} epoch {epoch + 1}: {len(broken)} weight tensors became NaN or infinite "
                            f"(e.g. {broken[0]}); nothing of this epoch is saved (try a lower --lr or --weight-decay)")


def save_state(state_path: Path, run, epoch: int, history: list, best: float, generator: torch.Generator) -> None:
    """The resume state after ``epoch``, written whole or not at all."""
    tmp = state_path.with_suffix(".tmp")
    torch.save(
        {
            "model": run.net.state_dict(),
            **({"feature": run.feature.state_dict()} if run.feature is not None else {}),
            "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict(),
            "epoch": epoch + 1,
            "history": history,
            "best": best,
            "torch_rng": torch.get_rng_state(),
            "loader_rng": generator.get_state(),
        },
        tmp,
    )
    tmp.replace(state_path)
