"""``srcli upscale``: super-resolve files, folders and glob patterns into an output folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from srcli.cli.common import (
    BatchOpt,
    CacheDirOpt,
    CompileOpt,
    DeviceOpt,
    DevicesOpt,
    ModelOpt,
    OfflineOpt,
    OutscaleOpt,
    PrecisionOpt,
    RayOpt,
    ScaleOpt,
    SelfEnsembleOpt,
    ThreadsOpt,
    TileOpt,
    TileOverlapOpt,
    WeightsOpt,
    console,
    download_progress,
    err_console,
    run_options,
    show_notices,
    tune_host_memory,
)
from srcli.errors import UsageError
from srcli.registry import DEFAULT_MODEL

_V = "Video"


def _render_summary(report: Any, output_root: Path | str | None = None) -> None:
    """The end-of-run table: done / skipped / failed, failures by file, time and throughput, where outputs went."""
    failed = [f for f in report.files if f.status == "failed"]
    if failed:
        table = Table(box=box.SIMPLE_HEAD, title="failed", title_justify="left", show_edge=False)
        table.add_column("file", overflow="fold")
        table.add_column("cause", overflow="fold")
        for f in failed:
            table.add_row(f.input, f.message.removeprefix(f"{f.input}: "))
        err_console.print(table)
    seconds = report.seconds
    done = report.count("done")
    summary = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for col in ("done", "skipped", "failed", "wall time", "model time", "images/s", "out MP/s"):
        summary.add_column(col, justify="right")
    summary.add_row(
        str(done),
        str(report.count("skipped")),
        f"[red]{len(failed)}[/red]" if failed else "0",
        f"{seconds:.1f} s",
        f"{report.model_seconds:.1f} s",
        f"{done / seconds:.2f}" if seconds > 0 else "-",
        f"{report.output_megapixels / seconds:.2f}" if seconds > 0 else "-",
    )
    err_console.print(summary)
    for f in report.files:
        if f.status == "done" and f.notes:
            err_console.print(f"[dim]{f.output}: {'; '.join(f.notes)}[/dim]", highlight=False, soft_wrap=True)
    if output_root is not None and done:
        err_console.print(f"outputs in {output_root}", highlight=False, soft_wrap=True)
    if report.interrupted:
        err_console.print("[yellow]interrupted: run again with --skip-existing to finish the batch[/yellow]")


def _render_plan(report: Any) -> None:
    """The dry run: every input, its final output (format changes included) and what the job would do."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, title="dry run: nothing is written", title_justify="left")
    table.add_column("input", overflow="fold")
    table.add_column("output", overflow="fold")
    table.add_column("action", overflow="fold")
    for f in report.files:
        action = {"planned": "upscale", "skipped": "skip", "failed": "[red]refuse[/red]"}[f.status]
        if f.status == "planned" and getattr(f, "replaced", False):
            action = "upscale, replacing the existing file"
        details = [f.message] if f.message else []
        details += getattr(f, "notes", [])
        table.add_row(f.input, f.output or "", action + (f" ({'; '.join(details)})" if details else ""))
    console.print(table)


def _show_dry_run(report: Any, as_json: bool) -> None:
    """Print a plan's report (the dry run), as JSON or as the plan table; refusals give exit code 1."""
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _render_plan(report)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


class _RichEvents:
    """Progress over images, plus a transient bar over tiles for large images."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.files_task: Any = None
        self.tiles_task: Any = None

    def started(self, total: int, report: Any) -> None:
        err_console.print(
            f"[dim]{report.model} x{report.scale} on {report.device}, {report.precision}"
            f"{', compiled' if report.compiled else ''}[/dim]"
        )
        self.files_task = self.progress.add_task("images", total=total, rate="")

    def file_started(self, item: Any) -> None:
        self.progress.update(self.files_task, description=item.input.name)
        if self.tiles_task is not None:
            self.progress.remove_task(self.tiles_task)
            self.tiles_task = None

    def tiles(self, done: int, total: int) -> None:
        if total <= 1:
            return
        if self.tiles_task is None:
            self.tiles_task = self.progress.add_task("  tiles", total=total, rate="")
        self.progress.update(self.tiles_task, completed=done, total=total)

    def file_finished(self, report: Any) -> None:
        self.progress.advance(self.files_task)
        task = next((t for t in self.progress.tasks if t.id == self.files_task), None)
        speed = task.speed if task is not None else None
        if speed:
            self.progress.update(self.files_task, rate=f"{speed:.2f} img/s")


def upscale_cmd(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders and glob patterns.", show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder (or file, for one input file).")] = Path(
        "upscaled"
    ),
    model: ModelOpt = DEFAULT_MODEL,
    scale: ScaleOpt = None,
    weights: WeightsOpt = None,
    outscale: OutscaleOpt = None,
    recursive: Annotated[
        bool, typer.Option("-r", "--recursive", help="Walk folders recursively and mirror the tree under -o.")
    ] = False,
    name: Annotated[
        str,
        typer.Option(
            "--name",
            help="Output name template: {stem} {name} {ext} {model} {scale} {parent}, e.g. {stem}_x{scale}.{ext}",
        ),
    ] = "{stem}.{ext}",
    fmt: Annotated[
        str | None, typer.Option("--format", help="Output format: png, jpg, webp, tif, bmp (default: the input's).")
    ] = None,
    quality: Annotated[
        int | None, typer.Option("--quality", min=1, max=100, help="JPEG / WebP quality (default 95).")
    ] = None,
    alpha: Annotated[
        str,
        typer.Option("--alpha", help="Alpha channel: resize (high-quality resize), model (through the model) or drop."),
    ] = "resize",
    keep_metadata: Annotated[
        bool, typer.Option("--keep-metadata", help="Copy EXIF to the output (the ICC profile is always kept).")
    ] = False,
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Leave outputs that already exist (resume a batch).")
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace existing files that this job did not write (without it they are refused; "
            "the job's own earlier outputs are always redone).",
        ),
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be done and write nothing.")] = False,
    fail_fast: Annotated[
        bool,
        typer.Option(
            "--fail-fast", help="Stop at the first file that fails (a file refused at planning: before any work)."
        ),
    ] = False,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    tile: TileOpt = "auto",
    tile_overlap: TileOverlapOpt = None,
    batch: BatchOpt = None,
    self_ensemble: SelfEnsembleOpt = False,
    compile: CompileOpt = False,
    max_pixels: Annotated[
        int, typer.Option("--max-pixels", min=0, help="Refuse inputs above this many pixels (0: no limit).")
    ] = 64 * 1024 * 1024,
    io_workers: Annotated[int | None, typer.Option("--io-workers", min=1, help="Reader and writer threads.")] = None,
    threads: ThreadsOpt = None,
    devices: DevicesOpt = None,
    ray: RayOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a machine-readable report on stdout.")] = False,
    cache_dir: CacheDirOpt = None,
    offline: OfflineOpt = False,
    # Video (srcli.pipeline.video): used when the inputs are videos, see _is_video_job.
    video: Annotated[
        bool,
        typer.Option("--video", help="Treat the input as video: a .gif, or a folder of frames.", rich_help_panel=_V),
    ] = False,
    frames: Annotated[
        bool,
        typer.Option("--frames", help="Write a folder of frames (-o) instead of a video file.", rich_help_panel=_V),
    ] = False,
    codec: Annotated[
        str | None,
        typer.Option("--codec", help="h264, hevc, vp9, av1, ffv1 or any ffmpeg encoder.", rich_help_panel=_V),
    ] = None,
    crf: Annotated[
        float | None,
        typer.Option("--crf", min=0, help="Constant quality (lower is better; h264 default 18).", rich_help_panel=_V),
    ] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="Encoder speed preset, e.g. slow, medium, fast.", rich_help_panel=_V)
    ] = None,
    pix_fmt: Annotated[
        str | None,
        typer.Option(
            "--pix-fmt", help="Output pixel format, e.g. yuv420p10le (default: the source's).", rich_help_panel=_V
        ),
    ] = None,
    no_audio: Annotated[
        bool, typer.Option("--no-audio", help="Leave out the source's audio streams.", rich_help_panel=_V)
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue an interrupted video from its last complete segment.", rich_help_panel=_V
        ),
    ] = False,
    on_bad_frame: Annotated[
        str,
        typer.Option(
            "--on-bad-frame",
            help="A frame that cannot be decoded: skip (show the previous) or stop.",
            rich_help_panel=_V,
        ),
    ] = "stop",
    segment_seconds: Annotated[
        float,
        typer.Option(
            "--segment-seconds", min=0.01, help="Length of the segments --resume restarts from.", rich_help_panel=_V
        ),
    ] = 60.0,
    fps: Annotated[
        str | None,
        typer.Option(
            "--fps",
            help="Frame rate of a folder of frames without timestamps.txt (24, 29.97, 30000/1001); refused with one.",
            rich_help_panel=_V,
        ),
    ] = None,
) -> None:
    """Super-resolve images: files, folders (-r for their whole tree) and glob patterns; videos too.

    Inputs are never modified; outputs are written to a temporary name and renamed. Everything is
    planned before the model loads (--dry-run shows the plan). A bad file is reported and the batch
    goes on; the exit code is 1 if any file failed.
    """
    run = run_options(
        model=model,
        scale=scale,
        weights=weights,
        device=device,
        precision=precision,
        tile=tile,
        tile_overlap=tile_overlap,
        batch=batch,
        compile=compile,
        self_ensemble=self_ensemble,
        outscale=outscale,
        threads=threads,
        cache_dir=cache_dir,
        offline=offline,
    )
    if devices is not None and ray is not None:
        raise UsageError("--devices and --ray are two ways to scale out: give one of them")
    if devices is not None:
        from srcli.pipeline.device_pool import parse_devices

        device_list = parse_devices(devices)
    if _is_video_job(inputs, output, video=video, frames=frames):
        from srcli.pipeline.video import VideoOptions, parse_fps

        _video_cmd(
            inputs,
            VideoOptions(
                run=run,
                output=output,
                name=name,
                format=fmt,
                skip_existing=skip_existing,
                overwrite=overwrite,
                fail_fast=fail_fast,
                max_pixels=max_pixels or None,
                io_workers=io_workers or 2,
                codec=codec,
                crf=crf,
                preset=preset,
                pix_fmt=pix_fmt,
                no_audio=no_audio,
                frames=frames,
                frame_format=(fmt or "png") if frames else "png",
                resume=resume,
                on_bad_frame=on_bad_frame,  # type: ignore[arg-type]
                segment_seconds=segment_seconds,
                fps=parse_fps(fps) if fps else None,
            ),
            as_json,
            dry_run,
            devices=device_list if devices is not None else None,
            ray=ray,
        )
        return

    from srcli.pipeline.image_plan import plan_images
    from srcli.pipeline.job import ImageOptions

    options = ImageOptions(
        run=run,
        output=output,
        name=name,
        format=fmt,
        skip_existing=skip_existing,
        overwrite=overwrite,
        fail_fast=fail_fast,
        max_pixels=max_pixels or None,
        io_workers=io_workers or default_io_workers(),
        recursive=recursive,
        quality=quality,
        alpha=alpha,  # type: ignore[arg-type]
        keep_metadata=keep_metadata,
    )
    from srcli.pipeline.remote import output_uri, stage_remote, unchanged

    # Object-store URIs (s3://, gs://...): staged locally, uploaded by finish (srcli.pipeline.remote).
    inputs, options, finish = stage_remote(inputs, options, dry_run=dry_run)
    plan = plan_images(inputs, options, create_folders=not dry_run)
    show_notices(plan.notices)
    if dry_run:
        from srcli.pipeline.images import report_for_plan

        _show_dry_run(finish(report_for_plan(plan)), as_json)
        return
    if devices is not None:
        report = _run_images_on(plan, as_json, devices=device_list)
    elif ray is not None:
        report = _run_images_on(plan, as_json, ray=ray)
    else:
        report = _run_images(plan, as_json)
    report = finish(report)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        remote = finish is not unchanged
        _render_summary(report, output_uri(output) if remote else plan.journal_root)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def default_io_workers() -> int:
    """I/O threads: enough to hide decoding and encoding, few enough to leave cores to the model."""
    import os

    return max(1, min(4, (os.cpu_count() or 2) // 2))


def _resolve_and_load(run: Any, needed: bool) -> tuple[Any, Any]:
    """Resolve the job's ``RunOptions`` once (device, precision, threads), keep freed host memory for reuse on
    the CPU, and load the model if ``needed``; downloads get their own progress bars, before the batch's (Rich
    shows one live display at a time)."""
    from srcli.engine.options import resolve_run

    resolved = resolve_run(run)
    if resolved.device.type == "cpu":
        tune_host_memory()

    if not needed:
        return resolved, None
    with download_progress() as reporter:
        return resolved, resolved.load(reporter)


def _run_images(plan: Any, as_json: bool) -> Any:
    from srcli.pipeline.images import run_job

    resolved, loaded = _resolve_and_load(plan.options.run, needed=bool(plan.todo))
    progress = _progress("{task.fields[rate]}", as_json)
    with progress:
        return run_job(plan, events=_RichEvents(progress), resolved=resolved, loaded=loaded)


def _run_images_on(plan: Any, as_json: bool, *, devices: list[str] | None = None, ray: str | None = None) -> Any:
    """The image job on several worker processes (``--devices``) or a Ray cluster (``--ray``): the same plan,
    one progress bar and one report, with each worker's throughput."""
    progress = _progress("{task.fields[rate]}", as_json)
    with progress:
        events = _RichEvents(progress)
        if devices is not None:
            from srcli.pipeline.device_pool import run_job_on_devices

            report = run_job_on_devices(plan, devices, events=events)
        else:
            from srcli.pipeline.ray_executor import run_job_on_ray

            report = run_job_on_ray(plan, ray or "auto", events=events)
    if not as_json:
        _render_workers(report)
    return report


def _render_workers(report: Any) -> None:
    """Per-worker throughput of a scaled-out run, and the retries after a worker died."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for col in ("worker", "device", "images", "failed", "restarts", "images/s", "out MP/s"):
        table.add_column(col, justify="left" if col in ("worker", "device") else "right")
    for w in report.workers:
        table.add_row(
            str(w.slot),
            w.description or w.device,
            str(w.images),
            str(w.failed),
            str(w.restarts),
            f"{w.images_per_second:.2f}" if w.seconds else "-",
            f"{w.output_megapixels / w.seconds:.2f}" if w.seconds else "-",
        )
    err_console.print(table)
    if report.retries:
        err_console.print(f"[yellow]{report.retries} image(s) run again after a worker died[/yellow]")


def _progress(rate_column: str, as_json: bool) -> Any:
    """The batch's progress display: description, bar, count, ``rate_column``, elapsed, ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}", style="bold"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(rate_column),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=as_json,
    )


# ---------------------------------------------------------------------------------------------------------- video
# Videos go through srcli.pipeline.video. A video file (by suffix: .mp4 .mkv .webm .mov .avi ...) always does;
# a .gif does when the output is a video file (-o x.mp4) or with --video, and otherwise stays an animated image;
# a folder does when the output is a video file, with --frames or with --video (it is then a folder of frames).

_VIDEO_OUT = (".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi")


def _is_video_job(inputs: list[str], output: Path, *, video: bool, frames: bool) -> bool:
    """Whether ``srcli upscale`` runs the video job for these arguments (see the rule above)."""
    from srcli.io.video import VIDEO_SUFFIXES

    paths = [Path(a).expanduser() for a in inputs]
    videos = [p for p in paths if p.suffix.lower() in VIDEO_SUFFIXES and not p.is_dir()]
    wants_video = video or frames or output.suffix.lower() in _VIDEO_OUT
    if videos and len(videos) != len(paths):
        others = [p for p in paths if p not in videos]
        if not wants_video or any(not (p.is_dir() or p.suffix.lower() == ".gif") for p in others):
            raise UsageError(f"{others[0]} is not a video: upscale videos and images in separate runs")
    if videos:
        return True
    return wants_video and all(p.is_dir() or p.suffix.lower() == ".gif" for p in paths)


class _VideoRichEvents:
    """A progress bar in frames, with the frame rate and the time left (``srcli.pipeline.video.VideoEvents``)."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.task: Any = None
        self.started_at = 0.0
        self.first_done = 0

    def started(self, report: Any) -> None:
        err_console.print(
            f"[dim]{report.model} x{report.scale} on {report.device}, {report.precision}"
            f"{', compiled' if report.compiled else ''}[/dim]"
        )

    def file_started(self, report: Any, total: int | None, done: int) -> None:
        import time

        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(Path(report.input).name, total=total, completed=done, rate="")
        self.started_at, self.first_done = time.perf_counter(), done

    def frames_done(self, done: int) -> None:
        import time

        elapsed = time.perf_counter() - self.started_at
        rate = (done - self.first_done) / elapsed if elapsed > 0 else 0.0
        self.progress.update(self.task, completed=done, rate=f"{rate:.2f} fps")

    def segment_done(self, report: Any, segments: int) -> None:
        """Nothing to show: the bar already counts the frames."""

    def file_finished(self, report: Any) -> None:
        if report.status == "done":
            note = f" ({'; '.join(report.notes)})" if report.notes else ""
            err_console.print(f"[green]done[/green] {report.output}: {report.frames} frames{note}", highlight=False)


def _render_video_summary(report: Any) -> None:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for col in ("video", "status", "frames", "bad", "decode fps", "model fps", "encode fps", "overall fps"):
        table.add_column(col, overflow="fold", justify="left" if col in ("video", "status") else "right")
    for f in report.files:
        stages = f.to_dict()["stages"]

        def fps(stage: str, stages: dict[str, Any] = stages) -> str:
            value = stages.get(stage, {}).get("fps")
            return f"{value:.2f}" if value else "-"

        status = {"done": "[green]done[/green]", "failed": "[red]failed[/red]"}.get(f.status, f.status)
        table.add_row(
            Path(f.input).name,
            status,
            str(f.frames),
            str(len(f.bad_frames)),
            fps("decode"),
            fps("model"),
            fps("encode"),
            fps("end_to_end"),
        )
    err_console.print(table)
    if report.interrupted:
        err_console.print("[yellow]interrupted: run the same command with --resume to continue[/yellow]")


def _video_cmd(
    inputs: list[str],
    options: Any,
    as_json: bool,
    dry_run: bool = False,
    devices: list[str] | None = None,
    ray: str | None = None,
) -> None:
    """Plan the video job (before anything loads), print the plan for ``--dry-run``, or run it with a progress bar
    (or JSON); the report's exit code becomes the command's. ``devices`` (``--devices``): the segments run on one
    worker process per device (``run_video_job_on_devices``); ``ray`` (``--ray ADDRESS``): one segment task at a
    time per Ray actor (``run_video_job_on_ray``); the same file out either way."""
    from srcli.pipeline.video import plan_video_job, report_for_video_plan, run_video_job

    plan = plan_video_job(inputs, options, create_folders=not dry_run)
    show_notices(plan.notices)
    if dry_run:
        _show_dry_run(report_for_video_plan(plan), as_json)
        return
    progress = _progress("frames {task.fields[rate]}", as_json)
    # SIGTERM arrives as srcli.errors.Terminated (srcli.cli.main): the segment in progress is removed, complete
    # ones stay, and the run exits 143.
    if devices is not None:
        from srcli.pipeline.video_devices import run_video_job_on_devices

        with progress:
            report = run_video_job_on_devices(plan, devices, events=_VideoRichEvents(progress))
    elif ray is not None:
        from srcli.pipeline.video_ray import run_video_job_on_ray

        with progress:
            report = run_video_job_on_ray(plan, ray or "auto", events=_VideoRichEvents(progress))
    else:
        resolved, loaded = _resolve_and_load(plan.options.run, needed=bool(plan.to_run))
        with progress:
            report = run_video_job(plan, events=_VideoRichEvents(progress), resolved=resolved, loaded=loaded)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _render_video_summary(report)
    if report.exit_code:
        raise typer.Exit(report.exit_code)
