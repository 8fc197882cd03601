"""What every command shares: the consoles, common options, error rendering, download progress."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Cache folder (default: $SRCLI_CACHE_DIR or the user cache dir).",
        show_default=False,
    ),
]
OfflineOpt = Annotated[
    bool,
    typer.Option("--offline", help="Never touch the network (also: SRCLI_OFFLINE=1)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


class _RichLogHandler(logging.Handler):
    """Shows the library's notices (recorded hashes, retries) as one dim line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        style = "yellow" if record.levelno >= logging.WARNING else "dim"
        err_console.print(f"[{style}]{record.getMessage()}[/{style}]", highlight=False, soft_wrap=True)


def tune_host_memory(device: str) -> bool:
    """Keep freed host memory mapped for reuse (``srcli.engine.host_memory``) when models will run on the CPU,
    where activations live in host memory; an accelerator's runs leave the allocator as it is. True if applied."""
    from srcli.engine.host_memory import keep_freed_memory

    if device != "cpu":
        from srcli.engine.devices import pick_device  # imports torch: only when the device must be found
        from srcli.errors import SrcliError

        try:
            if pick_device(device).type != "cpu":
                return False
        except SrcliError:  # the command reports a bad --device itself
            return False
    return keep_freed_memory()


def setup_logging(verbose: bool = False) -> None:
    """Route the ``srcli`` logger to stderr (idempotent)."""
    log = logging.getLogger("srcli")
    if not any(isinstance(h, _RichLogHandler) for h in log.handlers):
        log.addHandler(_RichLogHandler())
    log.setLevel(logging.INFO if verbose else logging.WARNING)
    log.propagate = False


@contextlib.contextmanager
def download_progress() -> Iterator:
    """A reporter for ``srcli.hub.download.fetch`` that draws one Rich progress bar per file."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )
    tasks: dict[str, int] = {}

    def report(key: str, done: int, total: int | None) -> None:
        if key not in tasks:
            tasks[key] = progress.add_task(key, total=total)
        progress.update(tasks[key], completed=done, total=total)

    with progress:
        yield report


def human_bytes(n: int) -> str:
    """``2796052`` -> ``2.8 MB``."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def human_count(n: int | None) -> str:
    """``13365543`` -> ``13.37M``; ``None`` -> ``-``."""
    if n is None:
        return "-"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.0f}K"
    return str(n)
