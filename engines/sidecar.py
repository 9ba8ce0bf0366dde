"""The JSON sidecar beside a TensorRT engine: what it was built from and for.

Pure Python (no TensorRT), so every backend can read it: another backend runs the
ONNX file or checkpoint it names when the engine cannot load here.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

from engines.errors import RealtimeError
from engines.meta import ModelMeta
from engines.writes import write_atomic

SIDECAR_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")
CONVERTERS = ("onnx", "torch2trt")


@dataclass(frozen=True)
class Target:
    """What a serialized engine is tied to."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "major.minor", e.g. "8.9"


@dataclass(frozen=True)
class Sidecar:
    """The JSON written beside an engine: its model metadata and what it was built for."""

    meta: ModelMeta
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    onnx: str | None = None
    converter: str = "onnx"
    format_version: int = SIDECAR_VERSION

    @property
    def target(self) -> Target:
        return Target(self.tensorrt_version, self.gpu_name, self.compute_capability)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["meta"] = json.loads(self.meta.to_json())
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "sidecar") -> "Sidecar":
        """Parse and validate; every problem is a one-line :class:`RealtimeError`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise RealtimeError(f"{source}: not valid JSON ({e}); rebuild the engine with `realtime convert`") from None
        if not isinstance(data, dict):
            raise RealtimeError(f"{source}: expected a JSON object; rebuild the engine with `realtime convert`")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        required = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
        missing = [n for n in required if n not in data]
        if unknown or missing:
            raise RealtimeError(
                f"{source}: not a realtime engine sidecar (missing {missing}, unknown {unknown}); "
                "rebuild the engine with `realtime convert`"
            )
        version = data.get("format_version", SIDECAR_VERSION)
        if not isinstance(version, int) or version > SIDECAR_VERSION:
            raise RealtimeError(f"{source}: sidecar format {version!r} is newer than this realtime reads; upgrade realtime")
        if not isinstance(data["meta"], dict):
            raise RealtimeError(f"{source}: 'meta' must be a JSON object")
        data["meta"] = ModelMeta.from_dict(dict(data["meta"]), source)
        side = cls(**data)
        side._validate(source)
        return side

    def _validate(self, source: str) -> None:
        def bad(what: str) -> RealtimeError:
            return RealtimeError(f"{source}: {what}; rebuild the engine with `realtime convert`")

        for name in ("tensorrt_version", "gpu_name", "compute_capability"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise bad(f"{name} must be a non-empty string")
        if not re.fullmatch(r"\d+\.\d+", self.compute_capability):
            raise bad(f"compute_capability must look like '8.9', got {self.compute_capability!r}")
        if self.precision not in PRECISIONS:
            raise bad(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.converter not in CONVERTERS:
            raise bad(f"converter must be one of {', '.join(CONVERTERS)}, got {self.converter!r}")
        batches = (self.min_batch, self.opt_batch, self.max_batch)
        integers = all(isinstance(b, int) and not isinstance(b, bool) for b in batches)
        if not integers or not 1 <= batches[0] <= batches[1] <= batches[2]:
            raise bad(f"batch profile must be integers with 1 <= min <= opt <= max, got {batches}")
        sha = self.checkpoint_sha256
        if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
            raise bad("checkpoint_sha256 must be 64 hex digits or null")


def sidecar_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.json``."""
    return Path(engine_path).with_suffix(".json")


def read_sidecar(engine_path: str | Path) -> Sidecar:
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise RealtimeError(f"{engine_path}: its sidecar {path.name} is missing; rebuild the engine with `realtime convert`")
    return Sidecar.from_json(path.read_text(), str(path))


def write_sidecar(engine_path: str | Path, sidecar: Sidecar) -> Path:
    return write_atomic(sidecar_path(engine_path), sidecar.to_json() + "\n", "sidecar")


def check_target(sidecar: Sidecar, current: Target, source: str | Path) -> None:
    """Refuse an engine built for another TensorRT version or GPU (one line, with the fix)."""
    built = sidecar.target
    rebuild = f"rebuild it here: realtime convert --model {sidecar.checkpoint or 'CKPT'} -o {source}"
    if built.tensorrt_version != current.tensorrt_version:
        raise RealtimeError(
            f"{source}: built with TensorRT {built.tensorrt_version}, this machine has TensorRT "
            f"{current.tensorrt_version}; {rebuild}"
        )
    if (built.gpu_name, built.compute_capability) != (current.gpu_name, current.compute_capability):
        raise RealtimeError(
            f"{source}: built for {built.gpu_name} (sm {built.compute_capability}), this GPU is "
            f"{current.gpu_name} (sm {current.compute_capability}); {rebuild}"
        )
