"""``srcli compare``: the papers' figure, zoomed crops of HR and of every model with their scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from srcli.cli.common import (
    SCALE_DEFAULT_TEXT,
    CacheDirOpt,
    DeviceOpt,
    OfflineOpt,
    PrecisionOpt,
    SelfEnsembleOpt,
    ThreadsOpt,
    WeightsOpt,
    console,
    download_progress,
    err_console,
    run_options,
    tune_host_memory,
)
from srcli.engine.options import check_run
from srcli.errors import UsageError

if TYPE_CHECKING:
    from srcli.engine.options import CheckedRun
    from srcli.eval.compare import CompareResult

#: The reference model of ``--lr`` (and the first default column).
BICUBIC = "bicubic"


def _split(values: list[str] | None) -> list[str]:
    """``["bicubic,imdn", "rgt"]`` -> ``["bicubic", "imdn", "rgt"]``."""
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def _checked_runs(
    names: list[str], scale: int | None, weights: Path | None, common: dict[str, Any]
) -> list[CheckedRun]:
    """One checked run per model, at one scale; ``--weights`` goes to the one model that loads weights."""
    from srcli.registry import get_model

    specs = [get_model(n) for n in names]
    learned = [s.name for s in specs if s.needs_weights]
    if weights is not None and len(learned) != 1:
        raise UsageError(
            f"--weights replaces one model's weights: list exactly one learned model with it (got {len(learned)}: "
            f"{', '.join(learned) or 'none'})"
        )
    runs = []
    for spec in specs:
        options = run_options(
            model=spec.name,
            scale=scale,
            weights=weights if spec.needs_weights else None,
            **common,
        )
        runs.append(check_run(options))
    scales = {r.options.scale for r in runs}
    if len(scales) > 1:
        raise UsageError(f"the models' default scales differ ({sorted(scales)}): give one with -s")
    return runs


def _print_scores(result: CompareResult) -> None:
    """Per image, a table of each model's scores (as ``srcli eval --per-image`` prints them) and the crop."""
    from srcli.eval.per_image import format_metric, metric_label

    for image in result.images:
        c = image.crop
        console.print(
            f"{image.name} x{result.scale}, crop {c.text()} ({image.crop_source})", highlight=False, soft_wrap=True
        )
        if result.lr_input:
            continue
        table = Table()
        table.add_column("model")
        for metric in result.metrics:
            table.add_column(metric_label(metric), justify="right")
        for model in result.models:
            scores = image.scores[model]
            table.add_row(model, *(format_metric(m, scores.get(m)) for m in result.metrics))
        console.print(table)


def _save_figure(figure: Any, path: Path) -> None:
    """Write the Pillow figure atomically, in the format the suffix names (PNG if it names none)."""
    import io

    from PIL import Image

    from srcli.atomic import write_bytes

    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    buffer = io.BytesIO()
    figure.save(buffer, format=fmt)
    write_bytes(path, buffer.getvalue())


def compare_cmd(
    images: Annotated[list[Path], typer.Argument(help="HR images (with --lr: low-resolution inputs), one row each.")],
    model: Annotated[
        list[str] | None,
        typer.Option(
            "-m",
            "--model",
            metavar="<str,...>",
            help="Models, comma-separated, one column each.",
            show_default="bicubic and the default model",
        ),
    ] = None,
    scale: Annotated[
        int | None,
        typer.Option("-s", "--scale", min=1, help="Scale factor.", show_default=SCALE_DEFAULT_TEXT),
    ] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the figure here (PNG).")] = None,
    crop: Annotated[
        str,
        typer.Option(
            "--crop",
            help="X,Y,W,H in HR (output) pixels, or auto[:SIZE]: the square (side min(w,h)//6, at least 16) "
            "where the per-pixel variance of Y across HR and the models, summed over the window, is largest.",
            show_default=True,
        ),
    ] = "auto",
    metrics: Annotated[
        list[str] | None,
        typer.Option(
            "--metrics",
            metavar="<str,...>",
            help="Metrics under each crop, besides PSNR and SSIM (e.g. gmsd,fsim,ms-ssim,fsimc).",
            show_default="psnr,ssim",
        ),
    ] = None,
    lr: Annotated[
        bool, typer.Option("--lr", help="The images are low-resolution inputs: no scores, bicubic as reference.")
    ] = False,
    html_path: Annotated[
        Path | None,
        typer.Option("--html", help="Also write one self-contained HTML page with a before/after slider per model."),
    ] = None,
    zoom: Annotated[
        int | None,
        typer.Option(
            "--zoom", min=1, help="Enlarge the crops N times (nearest neighbour).", show_default="about 256 px"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores and crops as JSON.")] = False,
    weights: WeightsOpt = None,
    self_ensemble: SelfEnsembleOpt = False,
    whole: Annotated[bool, typer.Option("--whole", help="Whole-image inference even where the paper tiled.")] = False,
    precision: PrecisionOpt = "fp32",
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    cache_dir: CacheDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Draw the papers' comparison figure: the image with a crop box, then the crop from HR and from each
    model, enlarged, labelled with the model's PSNR / SSIM on the whole image (as 'srcli eval --per-image').

    Example: srcli compare baby.png bird.png -m bicubic,imdn,rgt -s 4 -o figure.png --html figure.html
    """
    from srcli.eval.compare import parse_crop
    from srcli.registry import DEFAULT_MODEL

    if output is None and html_path is None:
        raise UsageError("give -o FIGURE.png and/or --html PAGE.html")
    names = _split(model) or [BICUBIC, DEFAULT_MODEL]
    crop_spec = parse_crop(crop)
    common = {
        "device": device,
        "precision": precision,
        "self_ensemble": self_ensemble,
        "threads": threads,
        "cache_dir": cache_dir,
        "offline": offline,
    }
    checked = _checked_runs(names, scale, weights, common)
    if len({c.options.model for c in checked}) != len(checked):
        raise UsageError(f"a model is listed twice in -m {','.join(names)}")
    reference = None
    if lr:
        reference = next((c for c in checked if c.options.model == BICUBIC), None)
        if reference is None:
            reference = check_run(run_options(model=BICUBIC, scale=checked[0].options.scale, **common))
        checked = [c for c in checked if c.options.model != BICUBIC]
        if not checked:
            raise UsageError("--lr compares models with bicubic: list at least one other model with -m")

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from srcli.engine.options import resolve_run
    from srcli.eval.compare import draw_figure, run_compare
    from srcli.eval.per_image import load_protocol_model, parse_metrics
    from srcli.registry import InferenceProtocol

    metric_names = [] if lr else parse_metrics(metrics)
    resolved = [resolve_run(c) for c in checked]
    resolved_reference = resolve_run(reference) if reference is not None else None
    if any(r.device.type == "cpu" for r in resolved):
        tune_host_memory()
    protocol = InferenceProtocol("whole") if whole else None
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err_console, transient=True
    )
    with download_progress() as reporter:
        loaded = [load_protocol_model(r, protocol=protocol, reporter=reporter) for r in resolved]
        bicubic = (
            load_protocol_model(resolved_reference, protocol=protocol, reporter=reporter)
            if resolved_reference is not None
            else None
        )
    with progress:
        task = progress.add_task("compare", total=None)

        def tick(done: int, total: int, what: str) -> None:
            progress.update(task, completed=done, total=total, description=what)

        result = run_compare(
            images, loaded, lr_input=lr, bicubic=bicubic, crop=crop_spec, metrics=metric_names, progress=tick
        )
    if output is not None:
        _save_figure(draw_figure(result, zoom), output)
        err_console.print(f"figure written to {output}", highlight=False)
    if html_path is not None:
        from srcli.atomic import write_text
        from srcli.eval.html_report import compare_html

        write_text(html_path, compare_html(result, zoom))
        err_console.print(f"page written to {html_path}", highlight=False)
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
    else:
        _print_scores(result)
