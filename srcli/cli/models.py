"""``srcli models``: list, describe, download, verify and locate model weights."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from srcli.cli.common import (
    CacheDirOpt,
    JsonOpt,
    OfflineOpt,
    console,
    download_progress,
    err_console,
    human_bytes,
    human_count,
)
from srcli.errors import SrcliError, UsageError
from srcli.hub.cache import cache_root, entry_path, offline_requested, verify_file
from srcli.hub.download import fetch
from srcli.hub.loading import check_placed_file
from srcli.hub.manifest import get_entry, load_manifest
from srcli.registry import ModelSpec, get_model, list_models

app = typer.Typer(help="List, describe, download and verify models and their weights.", no_args_is_help=True)


def _weights_status(entry, path) -> str:  # noqa: ANN001 - a PinnedFile and a Path
    """``embedded`` (ships in the package), ``cached``, ``not cached`` or ``by hand`` (no automatic source)."""
    if entry.embedded:
        return "embedded"
    if path.is_file():
        return "cached"
    return "not cached" if entry.downloadable else "by hand"


def _model_record(spec: ModelSpec, root) -> dict:  # noqa: ANN001 - a Path
    manifest = load_manifest()
    weights = {}
    for scale in spec.weight_scales:
        entry = manifest.get(spec.weights_key(scale))
        if entry is None:
            continue
        path = entry_path(entry, root)
        status = _weights_status(entry, path)
        cached = status == "cached"
        weights[f"x{scale}"] = {
            "key": spec.weights_key(scale),
            "file": entry.file,
            "sha256": entry.sha256,
            "size": entry.size,
            "downloadable": entry.downloadable,
            "drive_folder": entry.drive_folder or None,
            "status": status,
            "embedded": entry.embedded,
            "cached": cached,
            # Embedded weights live inside the installed package: an internal path, not shown.
            "path": str(path) if cached else None,
            "cached_bytes": path.stat().st_size if cached else None,
        }
    return {
        "name": spec.name,
        "family": spec.family,
        "aliases": list(spec.aliases),
        "summary": spec.summary,
        "scales": list(spec.scales),
        "needs_weights": spec.needs_weights,
        "weight_scales": list(spec.weight_scales),
        "params": {f"x{s}": n for s, n in spec.params.items()},
        "implemented": spec.implemented,
        "value_range": list(spec.value_range),
        "protocol": spec.protocol.describe(),
        "safe_precisions": ["fp32", *spec.safe_precisions],
        "licence": spec.licence,
        "paper": {
            "title": spec.paper.title,
            "venue": spec.paper.venue,
            "url": spec.paper.url,
            "table": spec.paper.table,
        },
        "weights": weights,
    }


#: The legend of each marker ``srcli models list`` can show; only those in the table are explained.
_LEGEND = {
    "cached": "✓ in the cache (size)",
    "not cached": "– downloaded on first use",
    "by hand": "by hand: no automatic source ('srcli models info')",
    "embedded": "embedded: ships inside srcli, works offline",
    "no weights": "none: no weights published at that scale (--weights FILE)",
    "none needed": "none needed: no weights",
    "none published": "none published: train them ('srcli train') or --weights FILE",
    "planned": "(planned): architecture not implemented yet",
}


def _weights_cells(rec: dict) -> tuple[str, set[str]]:
    """The weights cell of one model's row, and the legend keys it uses."""
    if not rec["needs_weights"]:
        return "[dim]none needed[/dim]", {"none needed"}
    if not rec["weights"]:
        return "[dim]none published[/dim]", {"none published"}
    cells, used = [], set()
    for scale in rec["scales"]:
        w = rec["weights"].get(f"x{scale}")
        status = w["status"] if w else "no weights"
        used.add(status)
        if status == "cached":
            cells.append(f"[green]x{scale} ✓ {human_bytes(w['cached_bytes'])}[/green]")
        elif status == "embedded":
            cells.append(f"[cyan]x{scale} embedded[/cyan]")
        elif status == "not cached":
            cells.append(f"[dim]x{scale} –[/dim]")
        elif status == "by hand":
            cells.append(f"[yellow]x{scale} by hand[/yellow]")
        else:
            cells.append(f"[dim]x{scale} none[/dim]")
    return " ".join(cells), used


@app.command("list")
def list_cmd(cache_dir: CacheDirOpt = None, as_json: JsonOpt = False) -> None:
    """Every model, its scales, parameters, licence and where its weights are (cached, embedded, not yet)."""
    root = cache_root(cache_dir)
    records = [_model_record(spec, root) for spec in list_models()]
    if as_json:
        console.print_json(json.dumps(records))
        return
    rows, used = [], set()
    for rec in records:
        counts = rec["params"]
        params = human_count(counts[max(counts, key=lambda k: int(k[1:]))]) if counts else "-"
        cell, markers = _weights_cells(rec)
        used |= markers
        name = rec["name"]
        if not rec["implemented"]:
            name += " [dim](planned)[/dim]"
            used.add("planned")
        rows.append((name, rec["family"], " ".join(f"x{s}" for s in rec["scales"]), params, cell, rec["licence"]))
    legend = ["params: at the largest scale", *(text for key, text in _LEGEND.items() if key in used)]
    table = Table(
        title=f"srcli models  (cache: {root})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        caption="; ".join(legend),
        caption_justify="left",
    )
    for col in ("model", "family", "scales", "params", "weights", "licence"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command("info")
def info_cmd(
    name: Annotated[str, typer.Argument(help="Model name or alias.")],
    cache_dir: CacheDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Everything the registry knows about one model, and where its weights come from."""
    spec = get_model(name)
    rec = _model_record(spec, cache_root(cache_dir))
    if as_json:
        console.print_json(json.dumps(rec))
        return
    console.print(f"[bold]{spec.name}[/bold] ({spec.family}) — {spec.summary}")
    if spec.aliases:
        console.print(f"aliases: {', '.join(spec.aliases)}")
    console.print(f"paper: {spec.paper.title}, {spec.paper.venue} {spec.paper.url}".rstrip())
    if spec.paper.table:
        console.print(f"published numbers: {spec.paper.table}")
    console.print(
        f"scales: {', '.join(f'x{s}' for s in spec.scales)}; "
        f"parameters: {', '.join(f'x{s} {n:,}' for s, n in spec.params.items()) or 'not counted yet'}"
    )
    lo, hi = spec.value_range
    console.print(
        f"input range: [{lo:g}, {hi:g}]; pad to multiple of {spec.pad_multiple}; "
        f"min input side {spec.min_size} px; reference protocol: {spec.protocol.describe()}"
    )
    console.print(f"precisions: fp32{''.join(', ' + p for p in spec.safe_precisions)}; licence: {spec.licence}")
    if not spec.implemented:
        console.print(f"[yellow]architecture not implemented yet ({spec.unavailable})[/yellow]")
    if spec.notes:
        console.print(f"note: {spec.notes}")
    if spec.needs_weights and not spec.weight_scales:
        console.print("weights: none were ever published; train them with 'srcli train' or pass --weights FILE")
    manifest = load_manifest()
    root = cache_root(cache_dir)
    for scale in spec.scales if spec.needs_weights and spec.weight_scales else ():
        entry = manifest.get(spec.weights_key(scale)) if scale in spec.weight_scales else None
        if entry is None:
            console.print(
                f"\n[bold]x{scale}[/bold] [dim]no weights were published at this scale[/dim]: pass a checkpoint "
                f"with --weights FILE, or train one with 'srcli train -m {spec.name} -s {scale} --train-dir DIR'",
                highlight=False,
            )
            continue
        status = _weights_status(entry, entry_path(entry, root))
        if status == "embedded":
            # Inside the installed package: no path to show or to act on.
            console.print(
                f"\n[bold]x{scale}[/bold] {entry.file} ([cyan]embedded[/cyan]: ships inside srcli, works offline)"
            )
        else:
            colour = "green" if status == "cached" else "dim"
            where = f"{'→' if status == 'cached' else 'goes to'} {entry_path(entry, root)}"
            console.print(
                f"\n[bold]x{scale}[/bold] {entry.file} ([{colour}]{status}[/{colour}]) {where}",
                highlight=False,
            )
        for i, url in enumerate(entry.urls):
            console.print(f"  {'url' if i == 0 else 'mirror'}: {url}", highlight=False)
        if entry.drive_folder:
            console.print(
                f"  drive folder: {entry.drive_folder} (srcli looks up '{entry.drive_path or entry.file}' "
                "there by name when downloading)",
                highlight=False,
            )
        if entry.sha256:
            console.print(f"  sha256: {entry.sha256}" + (f", {entry.size:,} bytes" if entry.size else ""))
        else:
            console.print("  sha256: not published upstream; recorded on first download and checked after")
        if entry.manual:
            console.print(f"  [yellow]by hand:[/yellow] {entry.manual}", highlight=False)
        console.print(f"  licence: {entry.licence}; source: {entry.source}", highlight=False)


def _selected_scales(spec: ModelSpec, scale: int | None, all_scales: bool) -> list[int]:
    if scale is not None:
        if scale not in spec.weight_scales:
            spec.check_scale(scale)
            raise UsageError(f"no published weights for '{spec.name}' x{scale}")
        return [scale]
    if all_scales or len(spec.weight_scales) <= 1:
        return list(spec.weight_scales)
    raise UsageError(f"'{spec.name}' has weights for several scales: pick one with -s or use --all")


@app.command("download")
def download_cmd(
    names: Annotated[list[str], typer.Argument(help="Model names (or 'all').")],
    scale: Annotated[int | None, typer.Option("-s", "--scale", help="Scale to fetch.")] = None,
    all_scales: Annotated[bool, typer.Option("--all", help="Every scale with pinned weights.")] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Download again even if cached: replaces a damaged file (once verified)."),
    ] = False,
    cache_dir: CacheDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Fetch pinned weights into the cache (resumable, verified)."""
    specs = list_models() if names == ["all"] else [get_model(n) for n in names]
    if names == ["all"]:
        all_scales = True
    root = cache_root(cache_dir)
    failed: list[str] = []
    with download_progress() as report:
        for spec in specs:
            if not spec.needs_weights or not spec.weight_scales:
                continue
            for s in _selected_scales(spec, scale, all_scales):
                entry = get_entry(spec.weights_key(s))
                try:
                    path = fetch(
                        entry,
                        root,
                        offline=offline_requested(offline),
                        reporter=report,
                        check_placed=lambda p, spec=spec, s=s: check_placed_file(spec, s, p),
                        force=force,
                    )
                    shown = "embedded in srcli" if entry.embedded else str(path)
                    console.print(f"[green]✓[/green] {entry.key}: {shown}", highlight=False, soft_wrap=True)
                except SrcliError as exc:
                    failed.append(entry.key)
                    err_console.print(f"[red]✗[/red] {exc}", highlight=False, soft_wrap=True)
    if failed:
        err_console.print(f"[red]{len(failed)} failed:[/red] {', '.join(failed)}")
        raise typer.Exit(1)


def _repair(results: list, root, offline: bool) -> dict[str, str]:  # noqa: ANN001 - a Path
    """Download a fresh copy of every damaged file; returns ``{key: "repaired" | error}``."""
    outcome: dict[str, str] = {}
    with download_progress() as report:
        for r in results:
            try:
                fetch(r.entry, root, offline=offline, reporter=report, force=True)
            except SrcliError as exc:
                outcome[r.entry.key] = str(exc)
                err_console.print(f"[red]✗[/red] {r.entry.key}: not repaired: {exc}", highlight=False, soft_wrap=True)
            else:
                outcome[r.entry.key] = "repaired"
                console.print(f"[green]✓[/green] {r.entry.key}: repaired", highlight=False)
    return outcome


@app.command("verify")
def verify_cmd(
    repair: Annotated[
        bool,
        typer.Option("--repair", help="Download a fresh copy of every damaged file (pinned URLs or SRCLI_MIRRORS)."),
    ] = False,
    cache_dir: CacheDirOpt = None,
    offline: OfflineOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-hash every cached checkpoint against its pinned or recorded sha256 (--repair replaces damaged ones)."""
    root = cache_root(cache_dir)
    results = [verify_file(entry, entry_path(entry, root)) for entry in load_manifest().values()]
    present = [r for r in results if r.status != "missing"]
    bad = [r for r in present if not r.ok]
    outcome = _repair(bad, root, offline_requested(offline)) if repair and bad else {}
    if as_json:
        records = []
        for r in present:
            record = {
                "key": r.entry.key,
                "path": None if r.entry.embedded else str(r.path),
                "status": r.status,
                "sha256": r.sha256,
                "expected": r.expected,
                "source": r.source,
            }
            if r.entry.key in outcome:
                record["repair"] = outcome[r.entry.key]
            records.append(record)
        console.print_json(json.dumps(records))
    else:
        table = Table(title=f"cached weights in {root}", title_justify="left")
        for col in ("weights", "status", "sha256", "checked against"):
            table.add_column(col, overflow="fold")
        for r in present:
            colour = "green" if r.ok else "red"
            status = f"[{colour}]{r.status}[/{colour}]"
            if outcome.get(r.entry.key) == "repaired":
                status += " [green]→ repaired[/green]"
            name = f"{r.entry.key} (embedded)" if r.entry.embedded else r.entry.key
            table.add_row(name, status, (r.sha256 or "")[:16], r.source)
        console.print(table if present else f"nothing cached in {root}")
    still_bad = [r for r in bad if outcome.get(r.entry.key) != "repaired"]
    if still_bad:
        hint = "" if repair else "; replace them with 'srcli models verify --repair'"
        err_console.print(
            f"[red]{len(still_bad)} damaged: {', '.join(r.entry.key for r in still_bad)}{hint}[/red]", highlight=False
        )
        raise typer.Exit(1)


@app.command("path")
def path_cmd(
    name: Annotated[str | None, typer.Argument(help="Model (prints where its files go).")] = None,
    scale: Annotated[int | None, typer.Option("-s", "--scale")] = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Print the cache folder, or the path a model's checkpoint has (or would have) in it."""
    root = cache_root(cache_dir)
    if name is None:
        console.print(str(root), highlight=False, soft_wrap=True)
        return
    spec = get_model(name)
    for s in [scale] if scale is not None else spec.weight_scales:
        console.print(str(entry_path(get_entry(spec.weights_key(s)), root)), highlight=False, soft_wrap=True)
