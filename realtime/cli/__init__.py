"""The `realtime` command: a thin click shell over the library, one module per command
group (``analysis``: annotate, run, serve, bench; ``models``; ``training``: train,
eval, calibrate, sheet; ``convert``: convert, ensemble, soup), their shared options in ``options``.

Each command parses its options, calls one library function and prints the result.
A user's mistake (RealtimeError or a bad option) prints one line on stderr and exits
non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import logging
import signal
import sys

from realtime import signals

# Ctrl-C while the libraries load (seconds) ends quietly instead of with a traceback
# through importlib; _Cli.main hands SIGINT back to Python once the command runs.
# (``python -m realtime.cli`` imports this package while sys.argv[0] is still "-m".)
_program_start = bool(sys.argv) and (sys.argv[0] == "-m" or sys.argv[0].endswith("realtime"))
if _program_start:
    signal.signal(signal.SIGINT, signals.interrupted_while_starting)

import click  # noqa: E402

from realtime import __version__  # noqa: E402
from realtime.errors import RealtimeError  # noqa: E402

log = logging.getLogger("realtime")


class _Cli(click.Group):
    """A group whose errors are one line on stderr."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            signals.command_started()
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:
            click.echo(e.ctx.get_help(), err=True)
            sys.exit(2)
        except click.ClickException as e:
            click.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except RealtimeError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except (MemoryError, OSError, RuntimeError, ImportError) as e:
            message = _resource_error(e)
            if message is None:
                raise  # a bug: keep its traceback
            click.echo(f"error: {message}", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


#: errno of the machine's limits (not of a user's file): reported in one line
_LIMIT_ERRNOS = {errno.ENOMEM, errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENAMETOOLONG}


def _resource_error(e: BaseException) -> str | None:
    """One line for running out of the machine's resources (``ulimit -v``, a full disk,
    no more threads or files) or a name too long, or None for anything else (a bug)."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    low = text.lower()
    if isinstance(e, MemoryError) or any(m in low for m in ("out of memory", "cannot allocate memory", "failed to map segment")):
        return f"out of memory ({text[:160]}); free memory, raise `ulimit -v`, or use smaller inputs"
    if isinstance(e, RuntimeError) and "can't start new thread" in text:
        return "cannot start a thread (the limit on threads, or memory, is reached)"
    if isinstance(e, OSError) and e.errno in _LIMIT_ERRNOS:
        return f"{e.filename + ': ' if isinstance(e.filename, str) else ''}{e.strerror or text}"
    return None


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    for name in ("realtime", "engines", "train"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="realtime")
@click.option("-v", "--verbose", count=True, help="More log output.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(verbose: int, quiet: bool) -> None:
    """Age group and gender for every face in a camera feed, video, image or folder."""
    _setup_logging(verbose, quiet)


def _add_commands() -> None:
    from realtime.cli.analysis import annotate, bench, run, serve
    from realtime.cli.archive import archive_command
    from realtime.cli.convert import convert_command, ensemble_command, soup_command
    from realtime.cli.models import models
    from realtime.cli.options import analyzer_options
    from realtime.cli.training import calibrate_command, eval_command, sheet_command, train_command

    for command in (annotate, run, serve, bench, models, train_command, eval_command, calibrate_command, convert_command, ensemble_command, soup_command):
        cli.add_command(command)
    cli.add_command(analyzer_options(sheet_command))
    cli.add_command(archive_command)
    from realtime.cli.teaching import facecrops_command, teach_command

    cli.add_command(facecrops_command)
    cli.add_command(teach_command)


try:
    _add_commands()  # the libraries load here: a machine out of memory is one line too
except (MemoryError, OSError, RuntimeError, ImportError) as e:
    if _program_start and (message := _resource_error(e)) is not None:
        sys.stderr.write(f"error: {message}\n")
        sys.exit(1)
    raise


def main() -> None:
    """The `realtime` program (the installed script's entry point)."""
    signals.start_program()
    try:
        cli(prog_name="realtime")
    except SystemExit as e:
        signals.end_program(e.code)  # returns unless a thread is stuck in native code
        raise
