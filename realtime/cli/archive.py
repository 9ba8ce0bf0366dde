"""The ``realtime archive`` command (thin: parse, call :func:`realtime.archive.archive`,
print)."""

from __future__ import annotations

import logging
import sys

import click

from realtime.cli.options import FiniteFloat, analyzer_options, analyzer_settings, encoder_options


class ArchiveProgress:
    """Two tqdm bars: files (done of to do) and frames (decoded, of those expected so far)."""

    def __init__(self, files: int):
        from tqdm import tqdm

        self.files = tqdm(total=files, desc="files", unit="file", dynamic_ncols=True, file=sys.stderr, disable=None, position=0)
        self.frame_bar = tqdm(total=0, desc="frames", unit="frame", dynamic_ncols=True, file=sys.stderr, disable=None, position=1)
        self._expected: dict[str, int] = {}
        self.failed = 0

    def frames(self, delta: int, expected: int | None, key: str) -> None:
        if expected and key not in self._expected:
            self._expected[key] = expected
            self.frame_bar.total = sum(self._expected.values())
        self.frame_bar.update(max(0, delta))

    def file_done(self, row: dict) -> None:
        self.failed += row["status"] != "ok"
        self.files.set_postfix(not_ok=self.failed, refresh=False)
        self.files.update()

    def close(self) -> None:
        self.frame_bar.close()
        self.files.close()


def _faults(values: tuple[str, ...]) -> dict[str, str]:
    faults = {}
    for value in values:
        part, sep, fault = value.rpartition("=")
        if not sep or fault.split("@")[0] not in ("kill", "kill-once", "hang"):
            raise click.BadParameter(f"{value!r}: expected NAME_PART=kill|kill-once|hang@FRAME", param_hint="--fault")
        faults[part] = fault
    return faults


@click.command("archive")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Results folder (made if missing; on a cluster, one every node sees).")
@click.option("--address", default=None,
              help="Ray cluster to join: auto (the one this machine is part of) or ray://HOST:PORT (default: a local one on 127.0.0.1).")
@click.option("--workers", type=click.IntRange(1), default=None, help="Files at once (default: CPUs / --cpus-per-worker).")
@click.option("--cpus-per-worker", type=FiniteFloat(0.1, 256), default=1.0, show_default=True, help="CPUs Ray reserves for each file.")
@click.option("--files-per-worker", type=click.IntRange(1, 10**6), default=50, show_default=True,
              help="Files a worker process analyses before a fresh one replaces it (memory stays bounded; the model loads again).")
@click.option("--gpus-per-worker", type=FiniteFloat(0, 16), default=0.0, show_default=True, help="GPUs (fractional) Ray reserves for each file.")
@click.option("--media/--no-media", default=False, show_default=True, help="Also write annotated mp4s (DIR/media).")
@click.option("--sample-fps", type=FiniteFloat(0.01, 1000), default=None, help="Analyse only this many frames a second (tracking across the gaps).")
@click.option("--retries", type=click.IntRange(0, 100), default=2, show_default=True, help="Tries again a file whose worker died, this many times.")
@click.option("--file-timeout", type=FiniteFloat(1), default=None, help="Seconds a file may run once started (default: no limit).")
@click.option("--force", is_flag=True, help="Redo files already done, and accept settings other than DIR's.")
@click.option("--dry-run", is_flag=True, help="Only say what would be done.")
@click.option("--fault", "faults", multiple=True, hidden=True, help="Tests: NAME_PART=kill|kill-once|hang@FRAME.")
@encoder_options
@analyzer_options
def archive_command(inputs, out, address, workers, cpus_per_worker, files_per_worker, gpus_per_worker, media, sample_fps, retries,
                    file_timeout, force, dry_run, faults, **kw):
    """Annotate many video files (INPUT: files, folders, globs, @list.txt) on Ray, into Parquet tables."""
    from realtime.archive import ArchiveSettings, archive

    settings = ArchiveSettings(
        out=out, analyzer=analyzer_settings(kw), address=address, workers=workers, cpus_per_worker=cpus_per_worker,
        files_per_worker=files_per_worker, gpus_per_worker=gpus_per_worker, media=media, sample_fps=sample_fps, retries=retries, file_timeout=file_timeout,
        force=force, dry_run=dry_run, encoder_threads=kw.pop("encoder_threads"), encoder_lookahead=kw.pop("encoder_lookahead"),
        faults=_faults(faults))
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(loggers=[logging.getLogger(n) for n in ("realtime", "engines")]):
        report = archive(list(inputs), settings, ArchiveProgress)
    if dry_run:
        for item in report.todo:
            click.echo(f"to do {item.key} {item.path}")
    for line in report.problems():
        click.echo(line, err=True)
    click.echo(report.line())
    sys.exit(report.exit_code)
