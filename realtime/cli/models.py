"""`realtime models`: the MediaPipe face detector models and the face-identity model."""

from __future__ import annotations

import click


@click.group()
def models() -> None:
    """The face detector and face-identity models: where they are, and fetching them."""


@models.command("list")
def models_list() -> None:
    """Show which detector models are found, and where."""
    from realtime.detector_models import list_detector_models, search_dirs

    for model, path, origin in list_detector_models():
        state = f"{path} ({origin})" if path else "missing: run `realtime models fetch`"
        click.echo(f"{model.range:6} {model.filename:42} {state}")
    from realtime.embedders import FACERES_FILE, find_faceres

    faceres = find_faceres()
    click.echo(f"{'reid':6} {FACERES_FILE:42} " + (str(faceres) if faceres else
               "missing: people are counted by tracks (`realtime models fetch --from DIR`, or --reid-model PATH)"))
    click.echo("searched: " + ", ".join(f"{d} ({o})" for o, d in search_dirs()))


@models.command("fetch")
@click.option("--from", "source", type=click.Path(exists=True), default=None,
              help="A folder holding the .tflite files, or a downloaded mediapipe wheel (default: download the wheel with pip).")
@click.option("--force", is_flag=True, help="Fetch again even if the cache already holds verified files.")
def models_fetch(source: str | None, force: bool) -> None:
    """Put the detector models into the user cache, checking their sha256 (and, from a
    --from folder that holds it, the face-identity model hse_faceres.onnx)."""
    import os

    from realtime.detector_models import fetch_detector_models
    from realtime.embedders import fetch_faceres

    for path in fetch_detector_models(source, force):
        click.echo(f"ok {path}")
    faceres = fetch_faceres(source) if source is not None and os.path.isdir(source) else None
    click.echo(f"ok {faceres}" if faceres else "no face-identity model: people are counted by tracks "
               "(--from a folder holding hse_faceres.onnx adds it; see README, Counting people)")


