"""The one error type for mistakes a user can make (``realtime.errors`` re-exports it)."""

from __future__ import annotations

import importlib.util


class RealtimeError(Exception):
    """A problem the user can fix: a missing file, a bad video, no camera, a wrong model.

    The message is one line that names the input and, where there is one, the fix.
    The CLI prints it on stderr and exits non-zero; anything else is a bug and keeps
    its traceback.
    """


#: Which ``pip install 'realtime[EXTRA]'`` brings each optional module.
EXTRAS = {"torch": "train", "timm": "train", "torchvision": "train", "openvino": "openvino", "tensorrt": "tensorrt"}


def require(module: str, what: str, hint: str = "") -> None:
    """Fail with one line naming the extra to install when ``module`` is missing
    (``what`` says what needs it, e.g. "realtime train"; ``hint`` an alternative)."""
    if importlib.util.find_spec(module) is None:
        extra = EXTRAS.get(module)
        fix = f"pip install 'realtime[{extra}]'" if extra else f"pip install {module}"
        raise RealtimeError(f"{what} needs {module}, which is not installed: {fix}{f' {hint}' if hint else ''}")


def require_at_least(settings: object, names: tuple[str, ...], minimum: int = 1) -> None:
    """Each of ``settings``' fields ``names`` must be at least ``minimum``; the error names
    the CLI option (``max_faces`` -> ``--max-faces``)."""
    for name in names:
        value = getattr(settings, name)
        if value < minimum:
            raise RealtimeError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")
