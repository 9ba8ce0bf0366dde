"""The one signal policy: what SIGINT, SIGTERM and SIGHUP (a closed terminal or SSH
session: as SIGTERM) do while the program starts, while a run works, while its
outputs are finished, and after.

- Starting (the libraries load): leave at once, "interrupted", exit 130
  (:func:`interrupted_while_starting`).
- A run (:func:`graceful_stop`, :func:`finishing_signals`): a signal sets the run's
  ``stop`` event, the loop ends after the current frame and every output is finished;
  more signals are only noted.
- The `realtime` program outside a run (:func:`interrupt_once`): the first signal is
  Ctrl-C (KeyboardInterrupt), later ones are ignored, so a storm of signals cannot turn
  the end of a command into a kill; once a run has started (:func:`run_started`), none
  is Ctrl-C any more, so the summary line is always printed.

Handlers are installed on the main thread only (elsewhere signals cannot be caught).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Callable, Iterator

log = logging.getLogger(__name__)

#: True when running as the `realtime` program (not called from Python or a test).
_program = False
_signalled = False
#: True once a run has started its outputs (:func:`run_started`): from then on the
#: run's own handlers take the signals, and after them a signal only waits for the
#: summary line
_running = False

#: The signals that end a run the way Ctrl-C does (SIGHUP: the terminal or SSH
#: session went away).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def interrupted_while_starting(signum, frame) -> None:
    """SIGINT while the libraries load: nothing is open yet, so leave at once (an
    exception here could land in a finalizer and be printed as "Exception ignored"
    instead of ending the process)."""
    os.write(2, b"interrupted\n")
    os._exit(130)


def ignore_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP ignored by the OS from here on (the command is ending)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def interrupt_once(signum, frame) -> None:
    """The `realtime` program's SIGINT, SIGTERM and SIGHUP outside a run's own handlers: the
    first ends the command as Ctrl-C does (KeyboardInterrupt: "interrupted", exit 130);
    later ones are ignored (by the OS: Python resets its own handlers while it shuts
    down), so a storm of signals that outlasts a run (whose handlers finish the outputs
    first) cannot turn its exit into a kill."""
    global _signalled
    ignore_signals()
    if not _signalled and not _running:
        _signalled = True
        raise KeyboardInterrupt


def run_started() -> None:
    """The program's run has started its outputs: a signal that comes after the run's
    own handlers are gone (it can finish within a storm of them) no longer raises
    KeyboardInterrupt, so the summary line is printed (the run says whether it was
    interrupted)."""
    global _running
    _running = True


def start_program() -> None:
    """Called once by the `realtime` program: SIGTERM as Ctrl-C, and a write over a file
    size limit a write error (one line), not a kill."""
    global _program
    _program = True
    for sig in STOP_SIGNALS[1:]:  # SIGTERM, and SIGHUP (a closed terminal or SSH session): as Ctrl-C
        signal.signal(sig, interrupt_once)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


#: Threads left inside native code that nothing can stop (FFmpeg waiting on a silent
#: server, :func:`abandon`).
_abandoned: list[threading.Thread] = []


def abandon(thread: threading.Thread) -> None:
    """``thread`` is left running inside native code (a daemon thread nobody waits for
    any more): if it is still there when the program ends, :func:`end_program` leaves
    without finalizing the interpreter, which such a thread can crash (seen: exit -11
    after "interrupted" on Ctrl-C while a stream was being opened)."""
    _abandoned.append(thread)


def end_program(code) -> None:
    """The `realtime` program is exiting with ``code`` (a SystemExit's; every output is
    closed by now): with an abandoned thread still alive, logs and stdio are flushed and
    the process ends at once with that code; otherwise this returns and Python exits as
    usual."""
    if any(t.is_alive() for t in _abandoned):
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def command_started() -> None:
    """A command begins: Ctrl-C is KeyboardInterrupt from here on (once, for the program)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, interrupt_once if _program else signal.default_int_handler)


def command_done() -> None:
    """The work is done: for the program a late (or another) signal changes nothing."""
    if _program:
        ignore_signals()


@contextlib.contextmanager
def signals_to(handler: Callable) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP go to ``handler`` inside the block (the main thread only:
    elsewhere signals cannot be caught and keep their default behaviour)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def request_stop(stop: threading.Event) -> Callable:
    """A signal handler that sets ``stop``; later signals are only noted."""

    def handler(signum, frame) -> None:
        if stop.is_set():
            log.warning("already stopping: finishing the outputs")
            return
        stop.set()

    return handler


@contextlib.contextmanager
def graceful_stop(stop: threading.Event) -> Iterator[threading.Event]:
    """Turn SIGINT/SIGTERM into a request to stop after the current frame (it sets
    ``stop``), so every sink holds the same frames and closes properly; more signals
    change nothing (the loop checks ``stop`` at least every 0.1 s, so it is prompt).
    Yields ``stop``."""
    with signals_to(request_stop(stop)):
        yield stop


@contextlib.contextmanager
def finishing_signals(stop: threading.Event, signalled: threading.Event) -> Iterator[Callable[[], None]]:
    """SIGINT/SIGTERM as KeyboardInterrupt (start-up: nothing written yet) until the
    caller calls the yielded function; from then on they set ``stop`` (the loop ends
    after the current frame) and are otherwise only noted, so a storm of signals
    cannot cut an mp4 or a JSONL short while the outputs are finished; each such signal
    also sets ``signalled``, so a caller learns of one that came after the loop had
    ended (``stop`` is set by then anyway). Off the main thread it does nothing."""
    running = threading.Event()
    request = request_stop(stop)

    def handler(signum, frame) -> None:
        if not running.is_set():
            raise KeyboardInterrupt
        signalled.set()
        request(signum, frame)

    with signals_to(handler):
        yield running.set
