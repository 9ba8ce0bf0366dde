"""`realtime convert` through the CLI: success and one-line errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from realtime.cli.convert import convert_command
from realtime.errors import RealtimeError


def invoke(*args: str) -> tuple[int, str, str]:
    """Run ``realtime convert ARGS`` (through the realtime group when it has the command);
    returns exit code, stdout and the error line."""
    try:
        from realtime.cli import cli
    except ImportError:
        cli = None
    if cli is not None and "convert" in getattr(cli, "commands", {}):
        result = CliRunner().invoke(cli, ["convert", *args])
        return result.exit_code, result.stdout, result.stderr.strip()
    result = CliRunner().invoke(convert_command, list(args))
    if isinstance(result.exception, RealtimeError):
        return 1, result.stdout, f"error: {result.exception}"
    return result.exit_code, result.stdout, result.stderr.strip()


def test_convert_to_onnx_with_check(checkpoint, faces_dir, tmp_path):
    out = tmp_path / "m.onnx"
    code, stdout, err = invoke("--model", str(checkpoint), "-o", str(out), "--check", "--check-images", str(faces_dir))
    assert code == 0, err
    assert out.is_file() and f"wrote onnx: {out}" in stdout and "-> ok" in stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "nowhere.safetensors", "-o", "m.onnx"], "model file not found: nowhere.safetensors"),
        (["--model", "{junk}", "-o", "m.onnx"], "not a realtime checkpoint"),
        (["--model", "{ckpt}", "-o", "m.onnx", "--check"], "--check needs real face crops"),
        (["--model", "{ckpt}", "-o", "m.txt"], "unknown output type"),
    ],
)
def test_convert_errors_are_one_line(args, message, tmp_path, checkpoint):
    junk = tmp_path / "junk.safetensors"
    junk.write_text("not weights")
    args = [a.format(junk=junk, ckpt=checkpoint) for a in args]
    code, _, err = invoke(*args)
    assert code != 0 and message in err and err.startswith("error: ") and "\n" not in err


def test_convert_tensorrt_missing(tensorrt_gpu, checkpoint, tmp_path):
    if tensorrt_gpu:
        pytest.skip("TensorRT is installed here")
    code, _, err = invoke("--model", str(checkpoint), "--fp16", "--max-batch", "32", "-o", str(tmp_path / "m.engine"))
    assert code == 1 and "TensorRT is not installed" in err and "\n" not in err
    assert not (tmp_path / "m.onnx").exists()
