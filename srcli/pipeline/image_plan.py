"""The image job's plan: every decision about every input, taken once, before any model loads.

``plan_images`` walks the inputs (never the job's own output tree), reads each file's headers,
and fixes for each one the final output path *with its final format* (alpha into JPEG or BMP
becomes PNG here, not at write time), whether it is upscaled, skipped or refused and why, and its
input and output sizes. It checks the options and that the output folders can be written. The
result, an immutable ``ImagePlan``, is what ``--dry-run`` prints and what every executor runs;
writers write exactly ``PlannedImage.output`` in ``PlannedImage.format`` and never rename.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from srcli.engine.options import check_run
from srcli.errors import ImageReadError, ImageWriteError, UsageError
from srcli.pipeline.inputs import INPUT_SUFFIXES, InputFile, check_template, collect_inputs, output_name
from srcli.pipeline.job import ALPHA_MODES, ImageOptions, JobPlan
from srcli.pipeline.outputs import (
    Action,
    OutputClaims,
    OutputJournal,
    decide_existing,
    job_fingerprint,
)

#: Output formats ``--format`` accepts, by the extension they get.
FORMAT_EXTENSIONS = {
    "png": "png",
    "jpg": "jpg",
    "jpeg": "jpg",
    "webp": "webp",
    "tif": "tif",
    "tiff": "tif",
    "bmp": "bmp",
    "gif": "gif",
}


@dataclass(frozen=True)
class PlannedImage:
    """One input and everything decided about it."""

    input: Path
    #: Folder of ``input`` relative to the argument that named it ('' for files named directly).
    relative_dir: str
    #: The final output path, its extension matching ``format``.
    output: Path
    #: Pillow format name to write (``None`` where the input was refused before it was known).
    format: str | None
    action: Action
    reason: str = ""
    #: What the user should know (a format change and why, 16 bits written as 8, ...).
    notes: tuple[str, ...] = ()
    #: The output exists and will be replaced (this job's own earlier result, or ``--overwrite``).
    replaces: bool = False
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    out_width: int | None = None
    out_height: int | None = None

    @property
    def pixels(self) -> int:
        """Input pixels over all frames (0 when unknown): the work the item costs, for scheduling."""
        return (self.width or 0) * (self.height or 0) * (self.frames or 1)


@dataclass(frozen=True)
class ImagePlan(JobPlan[ImageOptions, PlannedImage]):
    """The whole image job, resolved: options (checked), the model, every item, notices."""


def requested_extension(fmt: str | None) -> str | None:
    """``--format`` as an extension (``jpeg`` -> ``jpg``); ``UsageError`` for an unknown one."""
    if fmt is None:
        return None
    ext = FORMAT_EXTENSIONS.get(fmt.lower().lstrip("."))
    if ext is None:
        raise UsageError(f"--format '{fmt}': use one of {', '.join(sorted(set(FORMAT_EXTENSIONS.values())))}")
    return ext


def _single_output_file(arguments: list[str], output: Path) -> bool:
    """True when ``-o`` names one output file (one input file, an image suffix on ``output``)."""
    return (
        len(arguments) == 1
        and Path(arguments[0]).expanduser().is_file()
        and output.suffix.lower() in INPUT_SUFFIXES
        and not output.is_dir()
    )


def _check_output_argument(arguments: list[str], output: Path, single: bool) -> None:
    if single:
        return
    if output.suffix.lower() in INPUT_SUFFIXES and not output.is_dir():
        raise UsageError(
            f"-o {output} names one file, but the inputs ({', '.join(arguments)}) may hold several images: "
            "give an output folder"
        )
    if output.exists() and not output.is_dir():
        raise UsageError(f"-o {output}: is a file, not a folder")


def _check_job_options(options: ImageOptions) -> None:
    check_template(options.name)
    if options.alpha not in ALPHA_MODES:
        raise UsageError(f"--alpha must be one of {', '.join(ALPHA_MODES)}, not '{options.alpha}'")
    if options.quality is not None and not 1 <= options.quality <= 100:
        raise UsageError(f"--quality must be between 1 and 100, not {options.quality}")
    if options.max_pixels is not None and options.max_pixels <= 0:
        raise UsageError(f"--max-pixels must be positive (0 on the command line: no limit), not {options.max_pixels}")
    if options.io_workers < 1:
        raise UsageError(f"--io-workers must be >= 1, not {options.io_workers}")


def _plan_one(
    item: InputFile,
    options: ImageOptions,
    *,
    single: bool,
    requested: str | None,
    claims: OutputClaims,
    journal: OutputJournal,
    fingerprint: str,
) -> PlannedImage:
    from srcli.io.imagefile import format_of_extension, inspect_image, output_format_for

    run = options.run
    assert run.scale is not None
    scale_label = run.outscale if run.outscale is not None else run.scale
    if single:
        guess = options.output
    else:
        guess_ext = requested or item.path.suffix.lower().lstrip(".") or "png"
        name = output_name(options.name, item.path, model=run.model, scale=scale_label, ext=guess_ext)
        guess = options.output / item.relative_dir / name

    def refused(reason: str, **sizes: int | None) -> PlannedImage:
        return PlannedImage(item.path, item.relative_dir, guess, None, "refuse", reason, **sizes)

    try:
        facts = inspect_image(item.path, max_pixels=options.max_pixels)
    except ImageReadError as exc:
        return refused(str(exc).removeprefix(f"{item.path}: "))
    sizes = {"width": facts.width, "height": facts.height, "frames": facts.n_frames}
    # The format asked for: --format, else the output name's own suffix where it names a format (a
    # single -o file, or a template with a fixed extension), else the source's.
    named = format_of_extension(guess.suffix) if (single or "{ext}" not in options.name) else None
    wanted = requested or (guess.suffix.lstrip(".") if named else None)
    alpha_kept = options.alpha != "drop" and facts.has_alpha
    try:
        fmt, ext, note = output_format_for(facts, wanted, alpha_kept)
    except (ImageWriteError, UsageError) as exc:
        return refused(str(exc).removeprefix(f"{item.path}: "), **sizes)
    if single or named:
        out = guess if format_of_extension(guess.suffix) == fmt else guess.with_suffix("." + ext)
    else:
        name = output_name(options.name, item.path, model=run.model, scale=scale_label, ext=ext)
        out = options.output / item.relative_dir / name
    notes = (note,) if note else ()
    if out != guess and (single or named):
        notes = (f"written as {out.name}, not {guess.name}: {note}",)
    factor = run.output_scale
    out_w, out_h = round(facts.width * factor), round(facts.height * factor)
    planned = PlannedImage(
        item.path, item.relative_dir, out, fmt, "upscale", "", notes, False, **sizes, out_width=out_w, out_height=out_h
    )
    if options.max_pixels is not None and out_w * out_h * facts.n_frames > options.max_pixels * run.scale**2:
        reason = (
            f"the output would be {out_w} x {out_h} pixels ({out_w * out_h * facts.n_frames / 1e6:.0f} MP), over "
            f"--max-pixels x scale^2 ({options.max_pixels * run.scale**2 / 1e6:.0f} MP); lower --outscale"
        )
        return replace(planned, action="refuse", reason=reason)
    refusal = claims.refusal(out, item.path)
    if refusal:
        return replace(planned, action="refuse", reason=refusal)
    decision = decide_existing(
        out,
        item.path,
        journal=journal,
        fingerprint=fingerprint,
        skip_existing=options.skip_existing,
        overwrite=options.overwrite,
    )
    return replace(planned, action=decision.action, reason=decision.reason, replaces=decision.replaces)


def plan_images(arguments: list[str], options: ImageOptions, *, create_folders: bool = True) -> ImagePlan:
    """Resolve the image job for ``arguments`` (files, folders, glob patterns) once; see the module docstring.

    Raises ``UsageError`` for what stops the whole job (a bad option, no inputs, an unwritable output
    folder); a single bad input is refused in its ``PlannedImage`` and the others go on. With
    ``create_folders`` (not for a dry run) the output folders are made and checked by writing to them.
    """
    checked = check_run(options.run)
    options = replace(options, run=checked.options)
    _check_job_options(options)
    requested = requested_extension(options.format)
    single = _single_output_file(arguments, options.output)
    _check_output_argument(arguments, options.output, single)
    exclude = [] if single else [options.output]
    items = collect_inputs(arguments, recursive=options.recursive, exclude=exclude)
    if not items:
        raise UsageError("no input images found in " + ", ".join(arguments))
    run = options.run
    fingerprint = job_fingerprint(
        {
            "model": run.model,
            "scale": run.scale,
            "outscale": run.outscale,
            "weights": str(Path(run.weights).resolve()) if run.weights else None,
            "self_ensemble": run.self_ensemble,
            "alpha": options.alpha,
        }
    )
    journal_root = options.output.parent if single else options.output
    journal = OutputJournal(journal_root)
    claims = OutputClaims([i.path for i in items])
    planned = [
        _plan_one(
            item, options, single=single, requested=requested, claims=claims, journal=journal, fingerprint=fingerprint
        )
        for item in items
    ]
    planned = claims.refuse_collisions(planned)
    plan = ImagePlan(
        options=options,
        spec=checked.spec,
        items=tuple(planned),
        notices=checked.notices,
        journal_root=journal_root,
        fingerprint=fingerprint,
    )
    plan.check_output_folders(create=create_folders)
    return plan
