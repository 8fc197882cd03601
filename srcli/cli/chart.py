"""``srcli chart``: write the synthetic test chart, an input that needs no download."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from srcli.cli.common import err_console


def chart_cmd(
    output: Annotated[Path, typer.Argument(help="Where to write the chart (PNG unless the suffix says so).")] = Path(
        "chart.png"
    ),
    size: Annotated[int, typer.Option("--size", min=64, help="Side in pixels.")] = 192,
) -> None:
    """Write a test chart (zone plate, Siemens star, bars, ramps, flat patch) to try a model on.

    Example: srcli chart chart.png && srcli upscale chart.png -o upscaled/
    """
    from srcli.io.chart import write_chart

    path = write_chart(output, size)
    err_console.print(f"wrote {path} ({size}x{size})", highlight=False)
