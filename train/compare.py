"""Cost of candidate architectures for the default model: parameters, forward MFLOPs and
ONNX Runtime crops/s, the columns of MODEL_CARD.md's comparison table.

    python -m train.compare mobilenetv3_small_100 mobilenetv3_large_075 --sizes 112 128

Costs do not depend on the weights, so untrained networks are measured; accuracy comes
from training each one (``realtime train`` + ``realtime eval``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from engines.meta import ModelMeta


def arch_costs(arch: str, size: int, batch: int = 32, seconds: float = 3.0) -> dict:
    """``{"arch", "input_size", "parameters", "mflops", "crops_per_s"}`` for one candidate;
    crops/s is ONNX Runtime at ``batch`` without test-time flip (flip doubles the work)."""
    from engines.registry import create_engine
    from engines.bench import measure_engine
    from engines.model import create_model, save_checkpoint
    from train.evaluate import model_size

    meta = ModelMeta(arch=arch, input_size=size)
    with tempfile.TemporaryDirectory(prefix="realtime-compare-") as tmp:
        path = save_checkpoint(create_model(meta=meta).eval(), Path(tmp) / f"{arch}_{size}.safetensors")
        size_info = model_size(path, meta)
        speed = measure_engine(create_engine(path, "onnxruntime"), batch, seconds)
    return {
        "arch": arch,
        "input_size": size,
        "parameters": size_info["parameters"],
        "mflops": size_info["flops"] / 1e6,
        "crops_per_s": speed["crops_per_s"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archs", nargs="+")
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 128])
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args(argv)
    print("| arch | input | params (M) | MFLOPs | ONNX Runtime crops/s, batch %d |" % args.batch)
    print("|---|---|---|---|---|")
    for arch in args.archs:
        for size in args.sizes:
            row = arch_costs(arch, size, args.batch)
            print(f"| {arch} | {size} | {row['parameters'] / 1e6:.2f} | {row['mflops']:.0f} | {row['crops_per_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
