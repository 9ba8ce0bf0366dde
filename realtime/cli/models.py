"""`realtime models`: the MediaPipe face detector models."""

from __future__ import annotations

import click


@click.group()
def models() -> None:
    """The MediaPipe face detector models: where they are, and fetching them."""


@models.command("list")
def models_list() -> None:
    """Show which detector models are found, and where."""
    from realtime.detector_models import list_detector_models, search_dirs

    for model, path, origin in list_detector_models():
        state = f"{path} ({origin})" if path else "missing: run `realtime models fetch`"
        click.echo(f"{model.range:6} {model.filename:42} {state}")
    click.echo("searched: " + ", ".join(f"{d} ({o})" for o, d in search_dirs()))


@models.command("fetch")
@click.option("--from", "source", type=click.Path(exists=True), default=None,
              help="A folder holding the .tflite files, or a downloaded mediapipe wheel (default: download the wheel with pip).")
@click.option("--force", is_flag=True, help="Fetch again even if the cache already holds verified files.")
def models_fetch(source: str | None, force: bool) -> None:
    """Put the detector models into the user cache, checking their sha256."""
    from realtime.detector_models import fetch_detector_models

    for path in fetch_detector_models(source, force):
        click.echo(f"ok {path}")


