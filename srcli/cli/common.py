"""What every command shares: the consoles, the run options, error rendering, download progress.

The options that describe how a model runs (``-m``, ``-s``, ``--device``, ``--precision``, ``--tile`` ...)
are defined once here as ``Annotated`` aliases, so every command spells, types, documents and defaults
them alike; ``run_options`` turns their values into the engine's one options record, ``RunOptions``, and
``check_options`` checks it before anything imports torch. Importing this module stays light.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from srcli.engine.options import RunOptions

console = Console()
err_console = Console(stderr=True)

# ----------------------------------------------------------------------------------------- run options
# Defaults that are not a plain value are shown as text (``show_default="..."``), so that every option's
# default appears in ``--help`` in the same ``[default: ...]`` place.

#: What ``--scale`` defaults to, in words (every registered model's largest scale with weights is 4).
SCALE_DEFAULT_TEXT = "the model's largest, 4"

ModelOpt = Annotated[
    str, typer.Option("-m", "--model", help="Model name (see 'srcli models list').", show_default=True)
]
ScaleOpt = Annotated[
    int | None,
    typer.Option("-s", "--scale", help="Model scale factor.", show_default=SCALE_DEFAULT_TEXT),
]
WeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", help="A checkpoint file to use instead of the pinned weights.", show_default="pinned"),
]
DeviceOpt = Annotated[
    str,
    typer.Option("--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.", show_default=True),
]
PrecisionOpt = Annotated[
    str,
    typer.Option("--precision", help="auto, fp32, bf16 or fp16 (auto: what is safe for the model).", show_default=True),
]
TileOpt = Annotated[
    str,
    typer.Option(
        "--tile",
        help="Tile side in input pixels: auto (from free memory), 0 (whole image) or N.",
        show_default=True,
    ),
]
TileOverlapOpt = Annotated[
    int | None,
    typer.Option(
        "--tile-overlap", min=0, help="Input pixels shared by neighbouring tiles.", show_default="the model's"
    ),
]
BatchOpt = Annotated[
    int | None,
    typer.Option("--batch", min=1, help="Tiles (or frames) per forward pass.", show_default="4 on CUDA, else 1"),
]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile the model: pays off on many equal-sized tiles or frames; each new input shape "
        "compiles first (seconds to minutes).",
    ),
]
SelfEnsembleOpt = Annotated[
    bool,
    typer.Option(
        "--self-ensemble", help="Average the 8 flips / rotations (x8 slower, slightly better; the papers' '+')."
    ),
]
OutscaleOpt = Annotated[
    float | None,
    typer.Option(
        "--outscale",
        help="Final scale when it differs from the model's: more model passes, then a high-quality resize.",
        show_default="the model's scale",
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", min=1, help="CPU threads for torch.", show_default="torch's choice"),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir", help="Cache folder for weights and data sets.", show_default="$SRCLI_CACHE_DIR or the user's"
    ),
]
OfflineOpt = Annotated[
    bool,
    typer.Option("--offline", help="Never touch the network (also: SRCLI_OFFLINE=1)."),
]
DevicesOpt = Annotated[
    str | None,
    typer.Option(
        "--devices",
        help="Run on several devices at once, one worker process each: all (every CUDA device), "
        "cuda:0,cuda:1, or cpu,cpu (the CPU threads split between the workers).",
        show_default="one device, --device",
    ),
]
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        help="Run on a Ray cluster: auto, ray://HOST:PORT, or local (start one here). Needs the \\[ray] extra; "
        "inputs and outputs on a file system every node sees.",
        show_default="no Ray",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def run_options(
    *,
    model: str | None = None,
    scale: int | None = None,
    weights: str | Path | None = None,
    device: str = "auto",
    precision: str = "auto",
    tile: str | int = "auto",
    tile_overlap: int | None = None,
    batch: int | None = None,
    compile: bool = False,
    self_ensemble: bool = False,
    outscale: float | None = None,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    offline: bool = False,
) -> RunOptions:
    """The ``RunOptions`` for the values of the options above (paths as text, ``--tile`` parsed).

    ``model=None`` takes ``srcli.registry.DEFAULT_MODEL``; ``offline=False`` leaves the choice to
    ``SRCLI_OFFLINE``. Pure Python: raises ``UsageError`` only for a ``--tile`` that is not a number.
    """
    from srcli.engine.options import RunOptions, parse_tile
    from srcli.registry import DEFAULT_MODEL

    return RunOptions(
        model=model or DEFAULT_MODEL,
        scale=scale,
        weights=str(weights) if weights is not None else None,
        device=device,
        precision=precision,
        tile=parse_tile(tile),
        tile_overlap=tile_overlap,
        batch=batch,
        compile=compile,
        self_ensemble=self_ensemble,
        outscale=outscale,
        threads=threads,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
        offline=True if offline else None,
    )


def show_notices(notices: tuple[str, ...] | list[str]) -> None:
    """Print ``check_run``'s notices (adjusted options), one yellow line each, on stderr."""
    for notice in notices:
        err_console.print(f"[yellow]{notice}[/yellow]", highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------------------- help text
# Typer (0.2x) labels every option with its Python type: flags get ``<bool>`` (even --help), lists
# ``<list[str]>``, and required arguments show as ``{inputs}`` in the usage line. We render them as click
# always did: flags without a label, a list by its element type (``<str>...``), arguments as ``INPUTS...``.
# Older Typer versions, built on click, render that way already and lack these methods: nothing changes.

_LIST_LABEL = re.compile(r"<list\[(?P<item>[^\]]+)\]>")


def _list_label(label: str | None) -> str | None:
    """``<list[str]>`` -> ``<str>...`` (``Path`` as ``path``)."""
    if label is None:
        return None
    return _LIST_LABEL.sub(lambda m: f"<{m.group('item').lower()}>...", label)


def _tidy_help_labels() -> None:
    """Install the renderings above on Typer's parameter classes (once; a no-op where Typer lacks them)."""
    core: Any = getattr(typer, "core", None)
    option_cls = getattr(core, "TyperOption", None)
    argument_cls = getattr(core, "TyperArgument", None)
    if option_cls is None or argument_cls is None or getattr(option_cls, "_srcli_labels", False):
        return
    needed = (
        (option_cls, "display_type_rich"),
        (argument_cls, "display_type_rich"),
        (argument_cls, "_usage_display_name"),
    )
    if not all(hasattr(cls, name) for cls, name in needed):
        return
    option_label = option_cls.display_type_rich
    argument_label = argument_cls.display_type_rich

    def option_type(self: Any, ctx: Any) -> str | None:
        if self.metavar is None and (getattr(self, "is_flag", False) or getattr(self, "count", False)):
            return None
        return _list_label(option_label(self, ctx))

    def argument_type(self: Any, ctx: Any) -> str | None:
        label = _list_label(argument_label(self, ctx))  # the name column already ends in "..."
        return label.removesuffix("...") if label else label

    def usage_name(self: Any) -> str:
        name = self.metavar or (self.name or "").upper()
        if not self.required:
            name = f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    option_cls.display_type_rich = option_type
    argument_cls.display_type_rich = argument_type
    argument_cls._usage_display_name = usage_name
    option_cls._srcli_labels = True


_tidy_help_labels()


class _RichLogHandler(logging.Handler):
    """Shows the library's notices (recorded hashes, retries) as one dim line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        style = "yellow" if record.levelno >= logging.WARNING else "dim"
        err_console.print(f"[{style}]{record.getMessage()}[/{style}]", highlight=False, soft_wrap=True)


def tune_host_memory() -> bool:
    """Keep freed host memory mapped for reuse (``srcli.engine.host_memory``); commands call it once they have
    resolved their device to the CPU, where activations live in host memory. True if applied."""
    from srcli.engine.host_memory import keep_freed_memory

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
