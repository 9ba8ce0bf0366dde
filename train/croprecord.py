"""The record beside a ``realtime facecrops`` set of how its crops were cut
(``facecrops.json``: whether levelled by the eyes, side, framing, detector), and the
model's ``level_eyes`` that training takes from its sets' records.

A model levels all its crops or none (``ModelMeta.level_eyes``), so training on a set
cut otherwise than ``--level-eyes/--no-level-eyes`` says is refused in one line: the
model would be run on crops it never saw. Sets without a record (aligned chips such
as UTKFace's, which are level already; a CSV set of one's own) are taken as they are.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from engines.errors import RealtimeError
from engines.writes import json_text, write_atomic

log = logging.getLogger(__name__)

#: The record's file name, beside the set's ``labels.csv``.
RECORD = "facecrops.json"


def write_record(folder: Path, record: dict) -> None:
    """Write ``record`` (``level_eyes`` and how the crops were cut) as ``folder/facecrops.json``."""
    write_atomic(Path(folder) / RECORD, json_text(record, indent=2) + "\n", "the crops' record")


def read_record(root: str | Path) -> dict | None:
    """The record of the set at ``root`` (its folder, or its CSV file: the record of the
    CSV's folder); None for a set without one. A record that does not read is refused."""
    root = Path(root)
    path = (root.parent if root.is_file() else root) / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RealtimeError(f"{path}: not a record of `realtime facecrops` ({type(e).__name__}); recut the set or remove the file") from None
    if not isinstance(record, dict) or not isinstance(record.get("level_eyes"), bool):
        raise RealtimeError(f"{path}: not a record of `realtime facecrops` (no level_eyes true or false); recut the set or remove the file")
    return record


def training_level_eyes(sets: tuple[tuple[Path, str], ...], asked: bool | None) -> bool:
    """The ``level_eyes`` of a model trained on ``sets`` ((folder, format), ...):
    ``asked`` (``--level-eyes`` True, ``--no-level-eyes`` False), or with None what the
    sets' records say (False when none has one). RealtimeError when a recorded set was
    cut otherwise than ``asked``, or (``asked`` None) recorded sets were cut both ways."""
    recorded = {str(root): record["level_eyes"] for root, _ in sets if (record := read_record(root)) is not None}
    if asked is None:
        if len(set(recorded.values())) > 1:
            levelled = next(r for r, v in recorded.items() if v)
            plain = next(r for r, v in recorded.items() if not v)
            raise RealtimeError(f"{levelled} was cut levelled by the eyes and {plain} was not (their {RECORD}): a model "
                                "levels all its crops or none; recut one with `realtime facecrops` to match the other")
        asked = any(recorded.values())
        if asked:
            log.info("the crops of %s are levelled by the eyes (%s): the model's meta gets level_eyes", ", ".join(recorded), RECORD)
        return asked
    against = [root for root, levelled in recorded.items() if levelled != asked]
    if against:
        cut = "without levelling" if asked else "levelled by the eyes"
        raise RealtimeError(
            f"{'--level-eyes' if asked else '--no-level-eyes'}: {against[0]} was cut {cut} (its {RECORD}), so the model "
            f"would run on crops unlike those it learnt from; recut it with `realtime facecrops{' --level-eyes' if asked else ''}`, "
            f"or train {'without --level-eyes' if asked else 'without --no-level-eyes (the model then levels its crops)'}"
        )
    return asked
