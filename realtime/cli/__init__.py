"""The `realtime` command: a thin click shell over the library, one module per command
group (``analysis``: annotate, run, serve, bench; ``models``; ``training``: train,
eval, sheet; ``convert``: convert, ensemble), their shared options in ``options``.

Each command parses its options, calls one library function and prints the result.
A user's mistake (RealtimeError or a bad option) prints one line on stderr and exits
non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import signal
import sys

from realtime import signals

# Ctrl-C while the libraries load (seconds) ends quietly instead of with a traceback
# through importlib; _Cli.main hands SIGINT back to Python once the command runs.
# (``python -m realtime.cli`` imports this package while sys.argv[0] is still "-m".)
if sys.argv and (sys.argv[0] == "-m" or sys.argv[0].endswith("realtime")):
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
        sys.exit(result if isinstance(result, int) else 0)


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
    from realtime.cli.convert import convert_command, ensemble_command
    from realtime.cli.models import models
    from realtime.cli.options import analyzer_options
    from realtime.cli.training import eval_command, sheet_command, train_command

    for command in (annotate, run, serve, bench, models, train_command, eval_command, convert_command, ensemble_command):
        cli.add_command(command)
    cli.add_command(analyzer_options(sheet_command))
    cli.add_command(archive_command)


_add_commands()


def main() -> None:
    """The `realtime` program (the installed script's entry point)."""
    signals.start_program()
    cli(prog_name="realtime")
