"""``srcli eval``: the papers' benchmark protocol, next to the published numbers."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from srcli.atomic import write_text
from srcli.cli.common import (
    SCALE_DEFAULT_TEXT,
    CacheDirOpt,
    CompileOpt,
    DeviceOpt,
    DevicesOpt,
    OfflineOpt,
    PrecisionOpt,
    RayOpt,
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
from srcli.errors import DownloadError, OfflineError, SrcliError, UsageError
from srcli.eval.per_image import check_metric_names


def _split(values: list[str] | None) -> list[str]:
    """``["set5,set14", "b100"]`` -> ``["set5", "set14", "b100"]``."""
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def _scales(values: list[str] | None) -> list[int]:
    out = []
    for v in _split(values):
        try:
            out.append(int(v.lower().removeprefix("x")))
        except ValueError:
            raise UsageError(f"scale '{v}' is not a number (use e.g. -s 2,3,4)") from None
    return out


#: The metrics the published comparisons cover; any other ``--metrics`` is ours alone.
_PAPER_METRICS = ("psnr", "ssim")


def _extra_metrics(results: list[Any]) -> list[str]:
    """The metrics beyond PSNR / SSIM that any of ``results`` computed, in the order asked."""
    names: dict[str, None] = {}
    for r in results:
        names.update(dict.fromkeys(m for m in r.metrics if m not in _PAPER_METRICS))
    return list(names)


def _row(result: Any, table_id: str | None = None) -> dict[str, Any]:
    """One summary row: our means (PSNR, SSIM, then every other metric computed), next to the published
    PSNR / SSIM (``table_id`` first, when reproducing a table)."""
    published = result.published
    if table_id:  # reproducing a table: compare with the value that table prints
        published = sorted(published, key=lambda p: p["table"] != table_id)
    pub = published[0] if published else None
    return {
        "model": result.model,
        "dataset": result.dataset,
        "scale": result.scale,
        "psnr": round(result.psnr, 4),
        "ssim": round(result.ssim, 5),
        **{m: (None if v is None else round(v, 5)) for m, v in result.metrics.items() if m not in _PAPER_METRICS},
        "published_psnr": pub["psnr"] if pub else None,
        "published_ssim": pub["ssim"] if pub else None,
        "delta_psnr": round(result.psnr - pub["psnr"], 4) if pub else None,
        "delta_ssim": round(result.ssim - pub["ssim"], 5) if pub and pub["ssim"] is not None else None,
        "published_in": pub["table"] if pub else None,
        "images": len(result.images),
        "skipped": len(result.skipped),
        "seconds": round(result.seconds, 2),
    }


def _markdown(rows: list[dict[str, Any]], extra: list[str] | None = None) -> str:
    """The summary as a Markdown table; ``extra``: the metric columns after SSIM."""
    cols = [
        "model",
        "dataset",
        "scale",
        "psnr",
        "ssim",
        *(extra or []),
        "published_psnr",
        "published_ssim",
        "delta_psnr",
        "published_in",
        "images",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    """The summary rows as CSV, one column per key of the first row."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _fmt_delta(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    colour = "green" if value >= 0 else ("yellow" if value > -0.05 * 10 ** (2 - digits) else "red")
    return f"[{colour}]{value:+.{digits}f}[/{colour}]"


def _render(rows: list[dict[str, Any]], results: list[Any], per_image: bool) -> None:
    """The summary table (and with ``per_image`` one table of every image's scores per result)."""
    from srcli.eval.per_image import format_metric, metric_label

    extra = _extra_metrics(results)
    wide = console.width >= 130  # the source and time columns only where they fit unwrapped
    table = Table(
        title="srcli eval — PSNR / SSIM on Y, border = scale (ours vs published)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        collapse_padding=True,
    )
    columns = ["model", "dataset", "scale", "PSNR", "SSIM", "published", "Δ PSNR", "Δ SSIM", "images"]
    columns += ["source", "time"] if wide else []
    for col in columns:
        table.add_column(col, justify="left" if col in {"model", "dataset", "source"} else "right", no_wrap=True)
    for r in rows:
        pub = "-"
        if r["published_psnr"] is not None:
            pub = f"{r['published_psnr']:.2f}" + (
                f"/{r['published_ssim']:.4f}" if r["published_ssim"] is not None else ""
            )
        if r["psnr"] is None:  # a published row srcli did not run (``--table``)
            cells = [r["model"], r["dataset"], f"x{r['scale']}", "-", "-", pub, "-", "-", f"[dim]{r['status']}[/dim]"]
            table.add_row(*cells, *([r["published_in"], "-"] if wide else []))
            continue
        cells = [
            r["model"],
            r["dataset"],
            f"x{r['scale']}",
            f"{r['psnr']:.2f}",
            f"{r['ssim']:.4f}",
            pub,
            _fmt_delta(r["delta_psnr"], 2),
            _fmt_delta(r["delta_ssim"], 4),
            f"{r['images']}" + (f" ({r['skipped']} skipped)" if r["skipped"] else ""),
        ]
        cells += [r["published_in"] or "-", f"{r['seconds']:.1f}s"] if wide else []
        table.add_row(*cells)
    console.print(table)
    measured = [r for r in rows if r["psnr"] is not None]
    if extra and measured:  # no paper publishes these: a table of our own, beside the comparison
        more = Table(
            title=f"other metrics — on Y, border = scale{' (FSIMc on RGB)' if 'fsimc' in extra else ''}",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            show_edge=False,
            collapse_padding=True,
        )
        for col in ("model", "dataset", "scale", *(metric_label(m) for m in extra)):
            more.add_column(col, justify="left" if col in {"model", "dataset"} else "right", no_wrap=True)
        for r in measured:
            more.add_row(r["model"], r["dataset"], f"x{r['scale']}", *(format_metric(m, r.get(m)) for m in extra))
        console.print(more)
    if per_image:
        for res in results:
            t = Table(title=f"{res.model} on {res.dataset} x{res.scale}", title_justify="left")
            names = list(res.metrics) or list(_PAPER_METRICS)
            for col in ("image", "HR size", *(metric_label(m) for m in names)):
                t.add_column(col, justify="left" if col == "image" else "right")
            for img in res.images:
                width, height = img.hr_size
                values = img.metrics or {"psnr": img.psnr, "ssim": img.ssim}
                t.add_row(img.name, f"{width}x{height}", *(format_metric(m, values.get(m)) for m in names))
            console.print(t)


def eval_cmd(
    model: Annotated[
        list[str] | None,
        typer.Option(
            "-m",
            "--model",
            metavar="<str,...>",
            help="Model(s), comma-separated (required unless --sr-dir or --table).",
        ),
    ] = None,
    dataset: Annotated[
        list[str] | None,
        typer.Option(
            "-d",
            "--dataset",
            metavar="<str,...>",
            help="set5, set14, b100, urban100, manga109, comma-separated (or --data-dir).",
        ),
    ] = None,
    scale: Annotated[
        list[str] | None,
        typer.Option(
            "-s",
            "--scale",
            metavar="<int,...>",
            help="Scale(s), e.g. 4 or 2,3,4 (with --table: the table's rows at these scales).",
            show_default=SCALE_DEFAULT_TEXT,
        ),
    ] = None,
    table_id: Annotated[str | None, typer.Option("--table", help="Run every row of a paper's table we can.")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Folder of HR images instead of a named set."),
    ] = None,
    sr_dir: Annotated[
        Path | None,
        typer.Option("--sr-dir", help="Score SR images made elsewhere (no model runs)."),
    ] = None,
    weights: WeightsOpt = None,
    self_ensemble: SelfEnsembleOpt = False,
    whole: Annotated[bool, typer.Option("--whole", help="Whole-image inference even where the paper tiled.")] = False,
    precision: PrecisionOpt = "fp32",
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    devices: DevicesOpt = None,
    ray: RayOpt = None,
    compile: CompileOpt = False,
    per_image: Annotated[bool, typer.Option("--per-image", help="Also print every image's scores.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full results (with protocol) as JSON.")] = False,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Write the summary rows to a CSV file.")] = None,
    md_path: Annotated[Path | None, typer.Option("--markdown", help="Write the summary as a Markdown table.")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write the full JSON report to a file.")] = None,
    metrics: Annotated[
        list[str] | None,
        typer.Option(
            "--metrics",
            metavar="<str,...>",
            help="Metrics, comma-separated: psnr, ssim, ms-ssim, gmsd, fsim (on Y), fsimc (on RGB).",
            show_default="psnr,ssim",
        ),
    ] = None,
    html_path: Annotated[
        Path | None,
        typer.Option("--html", help="Write one self-contained HTML page of sortable per-image scores."),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Draw PSNR vs parameters (ours and published) to a PNG."),
    ] = None,
    plot_metric: Annotated[
        str | None,
        typer.Option("--plot-metric", help="The metric --plot draws (added to --metrics).", show_default="psnr"),
    ] = None,
    plot_x: Annotated[
        str | None,
        typer.Option("--plot-x", help="params, or mps (MP/s from --bench-json).", show_default="params"),
    ] = None,
    bench_json: Annotated[
        list[Path] | None,
        typer.Option("--bench-json", help="srcli bench --json output(s), for --plot-x mps."),
    ] = None,
    cache_dir: CacheDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Score models on the standard SR benchmarks (PSNR/SSIM on Y), next to the papers' numbers.

    Runs in fp32 unless --precision says otherwise (the papers' protocol). Example: srcli eval -m imdn -d set5
    """
    # Everything the words alone can refuse is refused here, before torch loads.
    plot_spec = _plot_spec(plot, plot_metric, plot_x, bench_json)
    metric_names = check_metric_names(
        [*(metrics or []), *([plot_spec.metric] if plot_spec else [])], always=_PAPER_METRICS
    )
    jobs = _jobs(model, dataset, scale, table_id, data_dir, sr_dir)
    device_list = _scale_out(devices, ray, sr_dir)
    checked: dict[tuple[str, int], Any] = {}
    for m, _, s in jobs:
        if m is not None and sr_dir is None and (m, s) not in checked:
            options = run_options(
                model=m,
                scale=s,
                weights=weights,
                device=device,
                precision=precision,
                compile=compile,
                self_ensemble=self_ensemble,
                threads=threads,
                cache_dir=cache_dir,
                offline=offline,
            )
            checked[(m, s)] = check_run(options)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from srcli.engine.options import resolve_run
    from srcli.eval.runner import evaluate
    from srcli.registry import InferenceProtocol

    # One resolution per (model, scale): the device is picked, the threads set, the precision settled.
    resolved = {key: resolve_run(run) for key, run in checked.items()}
    if any(r.device.type == "cpu" for r in resolved.values()):
        tune_host_memory()
    protocol = InferenceProtocol("whole") if whole else None
    results = []
    failures = 0
    unavailable: set[tuple[str | None, int]] = set()  # (model, scale) whose weights could not be had
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    with download_progress() as dl, progress:
        for m, d, s in jobs:
            if (m, s) in unavailable:
                continue
            task = progress.add_task(f"{m or 'sr-dir'} {d or data_dir} x{s}", total=None, rate="")
            started = time.perf_counter()

            def tick(done: int, total: int, name: str, task: int = task, started: float = started) -> None:
                rate = done / max(time.perf_counter() - started, 1e-9)
                progress.update(task, completed=done, total=total, rate=f"{rate:.2f} img/s")

            try:
                results.append(
                    evaluate(
                        m,
                        d,
                        s,
                        data_dir=data_dir,
                        sr_dir=sr_dir,
                        options=resolved.get((m, s)) if m is not None else None,
                        protocol=protocol,
                        cache_dir=cache_dir if sr_dir is not None else None,
                        offline=(offline or None) if sr_dir is not None else None,
                        progress=tick,
                        download_reporter=dl,
                        devices=device_list,
                        ray=ray,
                        metrics=metric_names,
                    )
                )
            except SrcliError as exc:
                if table_id and isinstance(exc, (DownloadError, OfflineError)):
                    # The table lists the row as not run; its other data sets need not retry the download.
                    unavailable.add((m, s))
                    err_console.print(f"[yellow]-[/yellow] {m} x{s}: weights not available ({exc})", highlight=False)
                elif len(jobs) == 1:
                    raise
                else:
                    failures += 1
                    err_console.print(f"[red]✗[/red] {m} {d} x{s}: {exc}", highlight=False)
            progress.remove_task(task)
    rows = [_row(r, table_id) for r in results]
    if as_json:
        console.print_json(json.dumps([r.to_dict() for r in results]))
    elif table_id:
        _render(
            _table_listing(table_id, results, unavailable, _split(model), _split(dataset), _scales(scale)),
            results,
            per_image,
        )
    elif rows:
        _render(rows, results, per_image)
    if rows and csv_path:
        write_text(csv_path, _csv(rows))
    if rows and md_path:
        write_text(md_path, _markdown(rows, _extra_metrics(results)))
    if html_path and results:
        write_text(html_path, _html_page(results))
        err_console.print(f"per-image scores written to {html_path}", highlight=False)
    if report:
        write_text(report, json.dumps([r.to_dict() for r in results], indent=2))
    if plot_spec and results:
        _plot(results, plot_spec)
    skipped = sum(len(r.skipped) for r in results)
    if skipped and not as_json:
        err_console.print(f"[yellow]{skipped} image(s) skipped[/yellow] (see warnings above)")
    if failures:
        err_console.print(f"[red]{failures} of {len(jobs)} evaluations failed[/red]")
        raise typer.Exit(1)


def _scale_out(devices: str | None, ray: str | None, sr_dir: Path | None) -> list[str] | None:
    """``--devices`` as a device list (``parse_devices``), after refusing what cannot go with it or ``--ray``."""
    if devices is not None and ray is not None:
        raise UsageError("--devices and --ray are two ways to scale out: give one of them")
    if sr_dir is not None and (devices is not None or ray is not None):
        raise UsageError("--devices and --ray run a model; --sr-dir scores existing images (no model runs)")
    if devices is None:
        return None
    from srcli.pipeline.device_pool import parse_devices

    return parse_devices(devices)


@dataclass(frozen=True)
class _PlotSpec:
    """What ``--plot`` draws: ``metric`` against ``x`` (``params`` or ``mps``) to ``out``."""

    out: Path
    metric: str
    x: str
    speeds: dict[tuple[str, int], float]


def _plot_spec(out: Path | None, metric: str | None, x: str | None, bench_json: list[Path] | None) -> _PlotSpec | None:
    """``--plot`` and its options, checked (and the bench results read) before torch loads."""
    from srcli.eval.plot import bench_speeds

    if out is None:
        if metric is not None or x is not None or bench_json:
            raise UsageError("--plot-metric, --plot-x and --bench-json go with --plot FILE.png")
        return None
    name = (metric or "psnr").strip().lower()
    check_metric_names([name], always=())
    axis = (x or "params").strip().lower()
    if axis not in ("params", "mps"):
        raise UsageError(f"--plot-x takes params or mps, not '{x}'")
    if axis == "mps" and not bench_json:
        raise UsageError("--plot-x mps needs --bench-json FILE (the output of srcli bench --json)")
    if axis == "params" and bench_json:
        raise UsageError("--bench-json goes with --plot-x mps")
    return _PlotSpec(out, name, axis, bench_speeds(list(bench_json or [])))


def _plot(results: list[Any], spec: _PlotSpec) -> None:
    """One figure for the first (dataset, scale) evaluated: by default PSNR vs parameters with the published
    points, as in the papers' Figure 1; with another ``--plot-metric`` or ``--plot-x mps``, our points only."""
    from srcli.eval.datasets import resolve_dataset_name
    from srcli.eval.per_image import available_metrics, metric_label
    from srcli.eval.plot import PlotPoint, ScatterPoint, draw_psnr_vs_params, draw_scatter, published_points
    from srcli.registry import get_model

    first = results[0]
    dataset = resolve_dataset_name(first.dataset)
    same = [r for r in results if resolve_dataset_name(r.dataset) == dataset and r.scale == first.scale]
    if spec.metric == "psnr" and spec.x == "params":
        points = published_points(dataset, first.scale)
        for r in same:
            params = get_model(r.model).params.get(r.scale)
            if params:
                points.append(PlotPoint(f"{r.model} (srcli)", params, r.psnr, ours=True))
        draw_psnr_vs_params(points, spec.out, f"PSNR vs parameters, {first.dataset} x{first.scale}")
    else:
        ours = []
        for r in same:
            value = r.metrics.get(spec.metric)
            x = get_model(r.model).params.get(r.scale) if spec.x == "params" else spec.speeds.get((r.model, r.scale))
            if x and value is not None:
                ours.append(ScatterPoint(f"{r.model} (srcli)", float(x), value, ours=True))
        if not ours:
            what = "a parameter count" if spec.x == "params" else "a --bench-json speed at this scale"
            raise UsageError(f"--plot: no model evaluated on {first.dataset} x{first.scale} has {what}")
        label = metric_label(spec.metric)
        lower = "" if available_metrics().get(spec.metric, True) else " (lower is better)"
        x_name = "parameters" if spec.x == "params" else "MP/s"
        draw_scatter(
            ours,
            spec.out,
            f"{label} vs {x_name}, {first.dataset} x{first.scale}",
            x_label=f"{x_name} (log scale)",
            y_label=f"{label}{' (dB)' if spec.metric == 'psnr' else ''}{lower}",
            **({} if spec.x == "params" else {"x_tick": lambda v: f"{v:g}"}),
        )
    err_console.print(f"plot written to {spec.out}", highlight=False)


def _html_page(results: list[Any]) -> str:
    """``--html``: one self-contained page, a sortable summary (the means) then every image's scores, with
    the best value per metric highlighted among the models on the same data set (summary) or image."""
    from srcli.eval.html_report import page_html, per_image_table_html

    names = list(dict.fromkeys(m for r in results for m in (r.metrics or _PAPER_METRICS)))
    summary, images = [], []
    for r in results:
        where = f"{r.dataset} x{r.scale}"
        values = r.metrics or {"psnr": r.psnr, "ssim": r.ssim}
        summary.append({"model": r.model, "dataset": r.dataset, "scale": r.scale, "group": where, **values})
        for img in r.images:
            scores = img.metrics or {"psnr": img.psnr, "ssim": img.ssim}
            row = {"image": img.name, "model": r.model, "dataset": r.dataset, "scale": r.scale, **scores}
            images.append({**row, "group": f"{where} {img.name}"})
    note = "Y channel, border = scale (FSIMc on RGB); click a header to sort; best per data set / image in bold."
    sections = [
        per_image_table_html(summary, names, keys=("model", "dataset", "scale"), group="group", caption="Means"),
        per_image_table_html(images, names, group="group", caption="Per image"),
    ]
    return page_html("srcli eval: per-image scores", sections, note=note)


def _jobs(model, dataset, scale, table_id, data_dir, sr_dir) -> list[tuple[str | None, str | None, int]]:  # noqa: ANN001
    """The (model, dataset, scale) triples to run, from the options or from a published table."""
    from srcli.engine.options import default_scale
    from srcli.eval.datasets import resolve_dataset_name
    from srcli.registry import get_model

    models, datasets, scales = _split(model), _split(dataset), _scales(scale)
    if table_id:
        return _table_jobs(table_id, models, datasets, scales)
    if not models and sr_dir is None:
        raise UsageError("give a model with -m (or --sr-dir, or --table)")
    if not datasets and data_dir is None:
        raise UsageError("give a dataset with -d/--dataset (or --data-dir)")
    if not scales and not models:
        raise UsageError("give the scale of the images in --sr-dir with -s (e.g. -s 4)")
    for m in models:
        spec = get_model(m)
        for s in scales:
            spec.check_scale(s)
    for d in datasets:
        resolve_dataset_name(d)
    jobs: list[tuple[str | None, str | None, int]] = []
    for m in models or [None]:
        # No -s: the model's own default scale (its largest with weights), as everywhere in srcli.
        model_scales = scales or [default_scale(get_model(m))]  # type: ignore[arg-type]
        for d in datasets or [None]:
            jobs += [(m, d, s) for s in model_scales]
    return jobs


def _table_listing(
    table_id: str,
    results: list[Any],
    unavailable: set[tuple[str | None, int]],
    models: list[str],
    datasets: list[str],
    scales: list[int],
) -> list[dict[str, Any]]:
    """Every row of a published table (within any -m / -d / -s), in its order: our score where we ran the
    row, else the published values and why srcli did not run it."""
    from srcli.eval.datasets import DISPLAY_NAMES, resolve_dataset_name
    from srcli.eval.published import load_tables
    from srcli.registry import get_model

    ours = {(r.model, resolve_dataset_name(r.dataset), r.scale): _row(r, table_id) for r in results}
    wanted_models = {get_model(m).name for m in models}
    datasets = [resolve_dataset_name(d) for d in datasets]
    listing = []
    for row in load_tables()[table_id].rows:
        spec = get_model(row.model) if row.model else None
        if (scales and row.scale not in scales) or (wanted_models and (spec is None or spec.name not in wanted_models)):
            continue
        for d, (psnr, ssim) in row.results.items():
            if datasets and d not in datasets:
                continue
            hit = ours.get((spec.name, d, row.scale)) if spec and not row.self_ensemble else None
            if hit:
                listing.append(hit)
                continue
            if spec is None:
                status = "not in srcli"
            elif row.self_ensemble:
                status = "self-ensemble row"
            elif not spec.implemented:
                status = "not implemented"
            elif spec.needs_weights and row.scale not in spec.weight_scales:
                status = "no weights"
            elif (spec.name, row.scale) in unavailable:
                status = "weights not available"
            else:
                status = "failed"
            listing.append(
                {
                    "model": spec.name if spec else row.method,
                    "dataset": DISPLAY_NAMES[d],
                    "scale": row.scale,
                    "psnr": None,
                    "ssim": None,
                    "published_psnr": psnr,
                    "published_ssim": ssim,
                    "published_in": table_id,
                    "status": status,
                }
            )
    return listing


def _table_jobs(
    table_id: str, models: list[str], datasets: list[str], scales: list[int]
) -> list[tuple[str | None, str | None, int]]:
    """Every row of a published table whose model srcli can run, limited by any -m / -d / -s given."""
    import difflib

    from srcli.eval.published import load_tables
    from srcli.registry import get_model

    tables = load_tables()
    if table_id not in tables:
        close = difflib.get_close_matches(table_id, list(tables), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"unknown table '{table_id}'{hint} (known: {', '.join(tables)})")
    jobs = []
    for row in tables[table_id].rows:
        if not row.model or row.self_ensemble:
            continue
        spec = get_model(row.model)
        runnable = spec.implemented and (not spec.needs_weights or row.scale in spec.weight_scales)
        if not runnable or (models and spec.name not in models) or (scales and row.scale not in scales):
            continue
        for d in row.results:
            if not datasets or d in datasets:
                jobs.append((spec.name, d, row.scale))
    if not jobs:
        raise UsageError(f"no row of '{table_id}' names a model srcli can run yet")
    return jobs
