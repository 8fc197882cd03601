"""The ``srcli`` command line: thin Typer commands over the library.

Importing this package must not import torch: ``srcli --help`` and ``srcli models list``
stay fast. Commands that run a model import it inside their bodies.

``main`` also sets the process-level behaviour every command shares: SIGTERM stops a command the way
Ctrl-C does (exit status 143 instead of 130), and output to a pipe whose reader has gone
(``srcli upscale in/ -o out/ 2>&1 | head -1``) is dropped while the command carries on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Annotated, Any, TextIO

import typer

from srcli._version import __version__
from srcli.cli import models, train
from srcli.cli.bench import bench_cmd
from srcli.cli.chart import chart_cmd
from srcli.cli.common import err_console, setup_logging
from srcli.cli.compare import compare_cmd
from srcli.cli.eval import eval_cmd
from srcli.cli.upscale import upscale_cmd
from srcli.errors import SrcliError, Terminated

app = typer.Typer(
    name="srcli",
    help="Batch image and video super-resolution: RGT, ASID, MSRA-SR, IMDN, RLFN and bicubic.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(models.app, name="models")
app.command("upscale")(upscale_cmd)
app.command("eval")(eval_cmd)
app.command("bench")(bench_cmd)
app.command("chart")(chart_cmd)
app.command("compare")(compare_cmd)
app.add_typer(train.app, name="train")


def _version(value: bool) -> None:
    if value:
        print(f"srcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Show retries and other notices.")] = False,
) -> None:
    setup_logging(verbose)


#: Exit statuses after Ctrl-C and after SIGTERM (128 + the signal number, as a shell reports a killed process).
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = Terminated.exit_code


class _ReaderGoneSafe:
    """A text stream that keeps working after the reading end of its pipe has closed (``| head -1``).

    The first ``BrokenPipeError`` (EPIPE) points the stream's file descriptor at the null device, as the
    Python documentation recommends for SIGPIPE, so that this write, everything after it (Rich consoles,
    logging, ``print``) and the flush at interpreter exit succeed and go nowhere, instead of raising in
    the middle of a batch or ending the process with "Exception ignored ... BrokenPipeError". Everything
    but ``write``, ``writelines`` and ``flush`` is delegated to the wrapped stream.
    """

    def __init__(self, stream: TextIO) -> None:
        self.wrapped = stream
        #: True once the reader has gone; a stream without a descriptor then drops every write here.
        self.reader_gone = False
        self._redirected = False

    def write(self, text: str) -> int:
        """Write ``text``; after the reader has gone, drop it and report it written."""
        if self.reader_gone and not self._redirected:
            return len(text)
        try:
            return self.wrapped.write(text)
        except BrokenPipeError:
            self._drop_from_now_on()
            return len(text)

    def writelines(self, lines: Any) -> None:
        """Write each of ``lines`` (no newlines added)."""
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Flush the wrapped stream; once the reader has gone its buffer empties into the null device."""
        if self.reader_gone and not self._redirected:
            return
        try:
            self.wrapped.flush()
        except BrokenPipeError:
            self._drop_from_now_on()

    def _drop_from_now_on(self) -> None:
        self.reader_gone = True
        try:
            fd = self.wrapped.fileno()
        except (OSError, ValueError):  # no descriptor (an in-memory stream): ``write`` drops instead
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
        self._redirected = True
        with contextlib.suppress(OSError, ValueError):
            self.wrapped.flush()  # what the pipe refused goes to the null device now

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


@contextlib.contextmanager
def _pipe_safe_output() -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` wrapped in ``_ReaderGoneSafe`` for the ``with`` block, then flushed
    (a closed pipe found only now is handled the same way) and restored."""
    saved = sys.stdout, sys.stderr
    wrapped = [_ReaderGoneSafe(s) if s is not None and not isinstance(s, _ReaderGoneSafe) else s for s in saved]
    sys.stdout, sys.stderr = wrapped
    try:
        yield
    finally:
        for stream in wrapped:
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
        sys.stdout, sys.stderr = saved


class _SigtermAsInterrupt:
    """While active (main thread only), SIGTERM raises ``Terminated`` in the main thread, once: the clean-up
    it starts (writes in flight finishing or being removed) is not cut short by a repeated SIGTERM."""

    def __init__(self) -> None:
        #: Whether SIGTERM arrived while the handler was installed.
        self.received = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.received:
            self.received = True
            raise Terminated

    def __enter__(self) -> _SigtermAsInterrupt:
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError, OSError):  # e.g. a sub-interpreter
                self._previous = signal.signal(signal.SIGTERM, self._handle)
                self._installed = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)


def _dispatch(argv: list[str] | None) -> int:
    """Run the app, rendering ``SrcliError`` as one line, and return the exit status."""
    try:
        # Without standalone mode click returns the code of a ``typer.Exit`` instead of raising it.
        result = app(args=argv, standalone_mode=False)
    except SrcliError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return EXIT_INTERRUPTED
    except Terminated:
        err_console.print("terminated")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        # Usage errors (click's, vendored or not, in non-standalone mode): show and exit with their code.
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            return exc.exit_code
        raise
    return result if isinstance(result, int) else 0


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app and return its exit status.

    ``SrcliError`` is shown as one line with its exit code. Ctrl-C and SIGTERM both stop the command
    through its ``KeyboardInterrupt`` clean-up; the status is 130 after Ctrl-C and 143 after SIGTERM, also
    when the command absorbed the interruption into its own report. Output to a pipe whose reader has
    closed is dropped and the command carries on.
    """
    with _pipe_safe_output(), _SigtermAsInterrupt() as sigterm:
        try:
            status = _dispatch(argv)
        except Terminated:  # arrived after ``_dispatch``'s handlers, e.g. while one of them printed
            status = EXIT_TERMINATED
    return EXIT_TERMINATED if sigterm.received else status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
