"""``srcli train``: train any registered architecture on HR folders; ``srcli train export``: deploy weights.

torch is imported inside the commands, so ``srcli --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from srcli.cli.common import (
    CacheDirOpt,
    DeviceOpt,
    OfflineOpt,
    ScaleOpt,
    ThreadsOpt,
    console,
    err_console,
    run_options,
    tune_host_memory,
)
from srcli.engine.options import check_run
from srcli.errors import UsageError

app = typer.Typer(
    help="Train a registered model on folders of HR images (LR made with the evaluation's MATLAB bicubic).",
    no_args_is_help=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: Options that define a run: on --resume, any given must equal the saved value.
_RUN_SETTINGS = (
    "model",
    "scale",
    "train_dirs",
    "val_dir",
    "val_dataset",
    "iters",
    "epochs",
    "budget_s",
    "batch_size",
    "patch_size",
    "lr",
    "schedule",
    "milestones",
    "gamma",
    "warmup",
    "ema",
    "grad_clip",
    "seed",
    "val_every",
    "amp",
    "init",
    "skip_small",
    "lr_cache",
)


#: The option of each run setting whose name differs from the setting's.
_OPTION_NAMES = {"train_dirs": "--train-dir", "budget_s": "--minutes", "batch_size": "--batch"}


def _floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option} '{text}' is not a comma-separated list of numbers") from None


def _opt_str(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def _merge(primary: Any, alias: Any, name: str) -> Any:
    """One value from an option and its hidden underscore spelling (the survey's ``--train_dir`` etc.)."""
    if primary is not None and alias is not None and primary != alias:
        raise UsageError(f"{name} is given twice with different values")
    return primary if primary is not None else alias


def _check_resume_settings(saved: dict[str, Any], given: dict[str, Any], out: Path) -> None:
    """``--resume`` continues with the saved settings; an option that contradicts them is an error."""
    from srcli.registry import get_model

    differ = []
    for key, value in given.items():
        if value is None or key not in saved or (key == "budget_s" and saved[key] is None):
            continue  # a --minutes run is saved as the iterations its budget came to
        have = saved[key]
        if key == "model":
            value, have = get_model(value).name, get_model(have).name
        elif key == "train_dirs":
            value, have = [str(Path(v).resolve()) for v in value], [str(Path(v).resolve()) for v in have]
        elif key in {"val_dir", "init", "lr_cache"} and have is not None:
            value, have = str(Path(value).resolve()), str(Path(have).resolve())
        if value != have:
            differ.append(f"{_OPTION_NAMES.get(key, '--' + key.replace('_', '-'))} (saved: {have}, given: {value})")
    if differ:
        raise UsageError(
            f"--resume continues {out} with its saved settings, which differ: {'; '.join(differ)}. "
            "Drop those options, or start a new run with another --output"
        )


def _progress_display():  # noqa: ANN202 - rich.progress.Progress
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        console=err_console,
        transient=False,
    )


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@app.callback(invoke_without_command=True)
def train_cmd(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Option("-m", "--model", help="Registered model to train (required for a new run).")
    ] = None,
    scale: ScaleOpt = None,
    train_dir: Annotated[
        list[Path] | None,
        typer.Option("--train-dir", metavar="<path>", help="Folder of HR training images (repeatable)."),
    ] = None,
    train_dir_alias: Annotated[list[Path] | None, typer.Option("--train_dir", hidden=True)] = None,
    val_dir: Annotated[Path | None, typer.Option("--val-dir", help="Folder of HR validation images.")] = None,
    val_dir_alias: Annotated[Path | None, typer.Option("--val_dir", hidden=True)] = None,
    val_dataset: Annotated[
        str | None,
        typer.Option("--val-dataset", help="Benchmark to validate on without --val-dir.", show_default="set5"),
    ] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Run folder (checkpoints, log).")] = None,
    output_alias: Annotated[Path | None, typer.Option("--out", hidden=True)] = None,
    iters: Annotated[int | None, typer.Option("--iters", help="Train this many iterations.")] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Or this many epochs (one patch per image each).")
    ] = None,
    minutes: Annotated[
        float | None, typer.Option("--minutes", help="Or for about this long (timed on a few steps first).")
    ] = None,
    batch: Annotated[int | None, typer.Option("--batch", min=1, help="Patches per batch.", show_default="16")] = None,
    batch_alias: Annotated[int | None, typer.Option("-b", "--batch-size", "--batch_size", min=1, hidden=True)] = None,
    patch_size: Annotated[
        int | None,
        typer.Option("--patch-size", help="HR patch side, a multiple of the scale.", show_default="64"),
    ] = None,
    patch_size_alias: Annotated[int | None, typer.Option("--patch_size", hidden=True)] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate.", show_default="5e-4")] = None,
    schedule: Annotated[
        str | None,
        typer.Option("--schedule", help="cosine or multistep, after a linear warm-up.", show_default="cosine"),
    ] = None,
    milestones: Annotated[
        str | None,
        typer.Option(
            "--milestones",
            help="Multistep: fractions of the run or iterations, comma-separated.",
            show_default="0.5,0.75,0.9",
        ),
    ] = None,
    gamma: Annotated[float | None, typer.Option("--gamma", help="Multistep decay factor.", show_default="0.5")] = None,
    warmup: Annotated[
        int | None,
        typer.Option("--warmup", help="Warm-up iterations.", show_default="2% of the run, at most 1000"),
    ] = None,
    ema: Annotated[
        float | None, typer.Option("--ema", help="EMA decay of the weights, 0 = off.", show_default="0.999")
    ] = None,
    grad_clip: Annotated[
        float | None, typer.Option("--grad-clip", help="Max gradient norm, 0 = off.", show_default="1.0")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of weights and patches.", show_default="0")] = None,
    val_every: Annotated[
        int | None,
        typer.Option(
            "--val-every",
            min=1,
            help="Validate and save every N iterations, and at the end.",
            show_default="run/10 within 100..1000",
        ),
    ] = None,
    init: Annotated[
        Path | None, typer.Option("--init", help="Start from these weights (tensors that fit, e.g. an x2 body).")
    ] = None,
    skip_small: Annotated[
        bool | None, typer.Option("--skip-small", help="Leave out training images smaller than the patch.")
    ] = None,
    amp: Annotated[
        str | None, typer.Option("--amp", help="auto (bf16 on CUDA), bf16 or off.", show_default="auto")
    ] = None,
    lr_cache: Annotated[
        Path | None,
        typer.Option("--lr-cache", help="Where LR images are cached.", show_default="OUTPUT/lr_cache"),
    ] = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    cache_dir: CacheDirOpt = None,
    offline: OfflineOpt = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --output exactly where it stopped.")
    ] = False,
) -> None:
    """Train a model: random crops, flips and rotations, L1, Adam, warm-up + cosine, EMA, periodic validation.

    Example: srcli train -m survey-net -s 2 --train-dir T91 --train-dir BSD200 --iters 20000 -o runs/x2
    """
    if ctx.invoked_subcommand is not None:
        return
    given = {
        "model": model,
        "scale": scale,
        "train_dirs": [str(p) for p in (_merge(train_dir or None, train_dir_alias or None, "--train-dir") or [])]
        or None,
        "val_dir": _opt_str(_merge(val_dir, val_dir_alias, "--val-dir")),
        "val_dataset": val_dataset,
        "iters": iters,
        "epochs": epochs,
        "budget_s": minutes * 60 if minutes is not None else None,
        "batch_size": _merge(batch, batch_alias, "--batch"),
        "patch_size": _merge(patch_size, patch_size_alias, "--patch-size"),
        "lr": lr,
        "schedule": schedule,
        "milestones": _floats(milestones, "--milestones"),
        "gamma": gamma,
        "warmup": warmup,
        "ema": ema,
        "grad_clip": grad_clip,
        "seed": seed,
        "val_every": val_every,
        "amp": amp,
        "init": _opt_str(init),
        "skip_small": skip_small,
        "lr_cache": _opt_str(lr_cache),
    }
    out = _merge(output, output_alias, "--output")
    if out is None:
        if not any(v is not None for v in given.values()):
            console.print(ctx.get_help())
            raise typer.Exit(0)
        raise UsageError("give the run folder with -o/--output")
    # What the words alone can refuse (model, scale, threads) is refused before torch loads.
    if not resume:
        missing = [] if model is not None else ["--model"]
        if not given["train_dirs"]:
            missing.append("--train-dir")
        if missing:
            raise UsageError(f"give {', '.join(missing)} (see 'srcli train --help')")
    if model is not None:
        checked = check_run(run_options(model=model, scale=scale, device=device, threads=threads))
        if not checked.spec.needs_weights:
            raise UsageError(f"model '{checked.spec.name}' has no parameters to train")
        if not resume:
            given["scale"] = checked.options.scale  # the model's default scale when -s is not given
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    _run_training(given, out, device, resume, cache_dir=_opt_str(cache_dir), offline=offline or None)


def _run_training(
    given: dict[str, Any],
    out: Path,
    device: str,
    resume: bool,
    *,
    cache_dir: str | None = None,
    offline: bool | None = None,
) -> None:
    from srcli.train.loop import TrainConfig, Trainer, TrainStatus

    display = _progress_display()
    prep_task: list[int] = []

    def prep(done: int, total: int, name: str) -> None:
        if not prep_task:
            prep_task.append(display.add_task("preparing LR images", total=total, info=""))
        display.update(prep_task[0], completed=done, info=name)

    with display:
        if resume:
            from srcli.hub.checkpoint import read_checkpoint

            last = out / "last.pt"
            if last.is_file():
                saved = read_checkpoint(last)
                if isinstance(saved, dict) and isinstance(saved.get("config"), dict):
                    _check_resume_settings(saved["config"], given, out)
            trainer = Trainer.resume(out, device=device, prep_progress=prep, cache_dir=cache_dir, offline=offline)
        else:
            settings = {k: v for k, v in given.items() if v is not None and k in _RUN_SETTINGS}
            config = TrainConfig(out=str(out), device=device, cache_dir=cache_dir, offline=offline, **settings)
            trainer = Trainer.create(config, prep_progress=prep)
        if trainer.device.type == "cpu":
            tune_host_memory()
        if prep_task:
            display.remove_task(prep_task[0])
        c = trainer.config
        task = display.add_task(
            f"{trainer.spec.name} x{c.scale}", total=trainer.total, completed=trainer.iteration, info="starting"
        )
        state: dict[str, Any] = {"loss": None, "it_s": None, "eta": None}

        def show(status: TrainStatus) -> None:
            if status.event == "train":
                state.update(loss=status.loss, it_s=status.it_per_s, eta=status.eta_s)
            loss = f"{state['loss']:.4f}" if state["loss"] is not None else "-"
            rate = f"{state['it_s']:.2f} it/s" if state["it_s"] is not None else "- it/s"
            val = f"{status.val_psnr:.2f} dB" if status.val_psnr is not None else "-"
            info = f"loss {loss}  lr {status.lr:.2e}  {rate}  ETA {_fmt_eta(state['eta'])}  val {val}"
            display.update(task, total=status.total, completed=status.iteration, info=info)

        try:
            summary = trainer.run(on_progress=show)
        except KeyboardInterrupt:
            display.stop()
            err_console.print(
                f"interrupted at iteration {trainer.iteration}; state saved: continue with "
                f"'srcli train --resume -o {out}'",
                highlight=False,
            )
            raise typer.Exit(130) from None
    best = summary["best"]
    if best:
        console.print(
            f"best {best['dataset']} x{c.scale}: {best['psnr']:.2f} dB / {best['ssim']:.4f} "
            f"at iteration {best['iteration']} of {summary['iterations']}",
            highlight=False,
        )
    console.print(
        f"run in {out} (best.pt, last.pt, log.jsonl); deploy weights: 'srcli train export {out} -o "
        f"{trainer.spec.name}_x{c.scale}.safetensors'",
        highlight=False,
    )


@app.command("export")
def export_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder (or a best.pt / last.pt checkpoint).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The .safetensors file to write.")],
    which: Annotated[str, typer.Option("--which", help="best (highest val PSNR) or last.")] = "best",
    dtype: Annotated[str, typer.Option("--dtype", help="fp32, fp16 or bf16.")] = "fp32",
    as_json: Annotated[bool, typer.Option("--json", help="Print the metadata written as JSON.")] = False,
) -> None:
    """Write a run's EMA weights in deploy form (re-parameterised where the model can) with provenance metadata."""
    from srcli.train.export import export_run

    meta = export_run(run, output, which=which, dtype=dtype)
    if as_json:
        console.print_json(json.dumps(meta))
        return
    psnr = f", {meta['val_dataset']} {meta['val_psnr']} dB" if meta.get("val_psnr") else ""
    console.print(
        f"wrote {output}: {meta.get('architecture')} x{meta.get('scale')}, {meta.get('iterations')} iterations"
        f"{psnr}, {dtype}; use it with --weights {output}",
        highlight=False,
    )
