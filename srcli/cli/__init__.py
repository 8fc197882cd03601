"""The ``srcli`` command line: thin Typer commands over the library.

Importing this package must not import torch: ``srcli --help`` and ``srcli models list``
stay fast. Commands that run a model import it inside their bodies.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from srcli._version import __version__
from srcli.cli import models, train
from srcli.cli.bench import bench_cmd
from srcli.cli.chart import chart_cmd
from srcli.cli.common import err_console, setup_logging
from srcli.cli.eval import eval_cmd
from srcli.cli.upscale import upscale_cmd
from srcli.errors import SrcliError

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


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app, rendering ``SrcliError`` as one line with its exit code."""
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
        return 130
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as exc:
        # Usage errors (click's, vendored or not, in non-standalone mode): show and exit with their code.
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            return exc.exit_code
        raise
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
