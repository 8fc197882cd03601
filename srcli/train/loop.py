"""The trainer: L1 loss, Adam, warm-up + cosine / multistep, EMA, bf16 on GPU, validation, checkpoints, resume.

A run lives in one folder:

* ``config.json``: the settings (also inside every checkpoint);
* ``last.pt`` / ``best.pt``: full training state (weights as ``params``, EMA weights as
  ``params_ema``, optimiser, sampler and RNG states, iteration, validation history), written
  atomically; ``best.pt`` is the state with the highest validation PSNR. Both load with
  ``srcli.hub.loading.load_model(name, scale, weights=...)``, which takes the EMA weights;
* ``log.jsonl``: one JSON object per line (``start``, ``train``, ``val``, ``interrupted``, ``end``);
* ``lr_cache/``: the LR images made from the training HR (reused by later runs into the same folder).

``Trainer.resume(out)`` restores everything in ``last.pt``, so on the CPU the resumed run takes
bit-for-bit the steps the uninterrupted run would have taken.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from srcli._version import __version__
from srcli.atomic import atomic_writer, write_text
from srcli.errors import DatasetError, SrcliError, UsageError
from srcli.registry import ModelSpec, get_model
from srcli.train.data import (
    Pair,
    PatchSampler,
    PrepProgress,
    check_patch_fit,
    list_images,
    load_val_pairs,
    make_pairs,
    read_hr,
)

log = logging.getLogger("srcli")

SCHEDULES = ("cosine", "multistep")
CHECKPOINT_FORMAT = 1


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in ``config.json`` and every checkpoint)."""

    model: str
    scale: int
    train_dirs: list[str]
    out: str
    #: Folder of validation HR images; when unset, the named benchmark ``val_dataset`` is used.
    val_dir: str | None = None
    val_dataset: str | None = "set5"
    #: Length: exactly one of ``iters``, ``epochs`` (one patch per image per epoch) or ``budget_s``
    #: (a wall-clock budget, turned into iterations by timing a few steps before training).
    iters: int | None = None
    epochs: int | None = None
    budget_s: float | None = None
    batch_size: int = 16
    #: HR patch side (the LR patch is ``patch_size / scale``).
    patch_size: int = 64
    lr: float = 5e-4
    schedule: str = "cosine"
    #: Multistep milestones: fractions of the run (<= 1) or iteration numbers (> 1).
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75, 0.9])
    gamma: float = 0.5
    #: Linear warm-up iterations; ``None``: 2% of the run, at most 1000.
    warmup: int | None = None
    #: Cosine floor, as a fraction of ``lr``.
    min_lr_ratio: float = 0.01
    ema: float = 0.999
    #: Max global gradient norm; 0 disables clipping.
    grad_clip: float = 1.0
    seed: int = 0
    #: Validate (and save ``last.pt``) every this many iterations, and at the end of the run; ``None``: a tenth
    #: of the run, kept within 100 to 1000 iterations (a short smoke run validates once, at its end).
    val_every: int | None = None
    log_every: int = 20
    device: str = "auto"
    #: bf16 autocast: ``auto`` (on CUDA only), ``bf16`` or ``off``.
    amp: str = "auto"
    #: Checkpoint to start from: tensors whose shape fits are loaded (e.g. an x2 body for x3 / x4).
    init: str | None = None
    skip_small: bool = False
    augment: bool = True
    #: Where LR images are cached (default ``<out>/lr_cache``).
    lr_cache: str | None = None
    #: Cache folder and offline switch for the validation benchmark's download (machine settings, like ``device``).
    cache_dir: str | None = None
    offline: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict`` (unknown keys from newer versions are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class TrainStatus:
    """What the progress display shows, passed to the ``on_progress`` callback."""

    iteration: int
    total: int
    loss: float | None
    lr: float
    it_per_s: float | None
    eta_s: float | None
    val_psnr: float | None
    best_psnr: float | None
    event: str = "train"


ProgressCallback = Callable[[TrainStatus], None]


#: Bounds of the default validation interval: not more often than every ``VAL_EVERY_MIN`` iterations (a smoke
#: run of a few dozen iterations validates once, at its end), not less often than every ``VAL_EVERY_MAX``.
VAL_EVERY_MIN = 100
VAL_EVERY_MAX = 1000


def validation_interval(total: int, asked: int | None = None) -> int:
    """Iterations between validations of a ``total``-iteration run: ``asked``, else a tenth of the run within
    ``VAL_EVERY_MIN`` to ``VAL_EVERY_MAX``. Never 0; the run validates at its end whatever the interval."""
    if asked:
        return max(1, asked)
    return max(1, min(VAL_EVERY_MAX, max(VAL_EVERY_MIN, total // 10)))


def build_training_module(spec: ModelSpec, scale: int) -> torch.nn.Module:
    """``spec``'s architecture at ``scale`` in its *training* form (``deploy=False`` where the class has one)."""
    spec.check_scale(scale)
    if spec.arch is None:
        spec.build(scale)  # raises the registry's "not implemented yet" error
    module_name, _, class_name = spec.arch.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    kwargs = {**spec.arch_kwargs, spec.scale_kwarg: scale}
    if "deploy" in inspect.signature(cls).parameters:
        kwargs["deploy"] = False  # re-parameterisable models train with their branches
    return cls(**kwargs)


class LRSchedule:
    """Linear warm-up to ``lr``, then cosine decay to ``min_lr_ratio * lr`` or step decay at milestones.

    A pure function of the iteration, so resuming needs no scheduler state beyond the iteration.
    """

    def __init__(self, config: TrainConfig, total: int) -> None:
        if config.schedule not in SCHEDULES:
            raise UsageError(f"schedule '{config.schedule}' is not one of {', '.join(SCHEDULES)}")
        self.base = config.lr
        self.total = total
        self.kind = config.schedule
        self.warmup = config.warmup if config.warmup is not None else min(1000, round(0.02 * total))
        self.min_ratio = config.min_lr_ratio
        self.gamma = config.gamma
        self.milestones = sorted(round(m * total) if m <= 1 else int(m) for m in config.milestones)

    def factor(self, step: int) -> float:
        """Multiplier of the base rate for 0-based ``step``."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "multistep":
            return self.gamma ** sum(step >= m for m in self.milestones)
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def __call__(self, step: int) -> float:
        """Learning rate for 0-based ``step``."""
        return self.base * self.factor(step)


class EMA:
    """Exponential moving average of a module's parameters (buffers copied), with the usual warm-up.

    The decay used at update ``n`` is ``min(decay, (1 + n) / (10 + n))``: short runs are not
    dominated by the random initialisation.
    """

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(module).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        """Move the average towards ``module``'s current weights."""
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        ema_p = list(self.module.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in module.parameters()], 1.0 - d)
        for eb, b in zip(self.module.buffers(), module.buffers(), strict=True):
            eb.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights and the update count."""
        return {"updates": self.updates, "decay": self.decay}


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through ``srcli.atomic``: a killed run never leaves a torn checkpoint."""
    with atomic_writer(path) as fh:
        torch.save(obj, fh)


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``srcli.atomic``)."""
    write_text(path, text)


def _load_init(module: torch.nn.Module, spec: ModelSpec, path: str) -> tuple[int, list[str]]:
    """Load every tensor of checkpoint ``path`` whose name and shape fit ``module``; returns (loaded, skipped)."""
    from srcli.hub.checkpoint import read_checkpoint, unwrap_state_dict

    state = unwrap_state_dict(read_checkpoint(path), spec.checkpoint_keys, spec.strip_prefix)
    own = module.state_dict()
    fit = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not fit:
        raise SrcliError(f"--init {path}: no tensor fits {type(module).__name__} (another architecture?)")
    skipped = sorted(k for k in own if k not in fit)
    module.load_state_dict(fit, strict=False)
    return len(fit), skipped


def _pick_device(choice: str) -> torch.device:
    from srcli.engine.inference import pick_device

    return pick_device(choice)


class Trainer:
    """One training run. Build with ``Trainer.create(config)`` or ``Trainer.resume(out)``, then ``run()``."""

    def __init__(
        self,
        config: TrainConfig,
        spec: ModelSpec,
        train_pairs: list[Pair],
        val_pairs: list[Pair],
        val_label: str,
        device: torch.device,
        *,
        resuming: bool = False,
    ) -> None:
        self.config = config
        self.spec = spec
        self.device = device
        self.out = Path(config.out)
        self.val_pairs = val_pairs
        self.val_label = val_label
        self.amp = config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda")
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch shapes: let cuDNN pick its fastest kernels
        torch.manual_seed(config.seed)
        self.model = build_training_module(spec, config.scale).to(device)
        self.sampler = PatchSampler(
            train_pairs,
            config.scale,
            config.patch_size,
            config.batch_size,
            seed=config.seed,
            augment=config.augment,
            device=device,
        )
        self.num_train_images = len(train_pairs)
        self.init_report: tuple[int, list[str]] | None = None
        if config.init and not resuming:  # a resumed run restores its own weights (the file may be gone)
            self.init_report = _load_init(self.model, spec, config.init)
        adam_kw: dict[str, Any] = {"fused": True} if device.type == "cuda" else {}
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=(0.9, 0.99), **adam_kw)
        self.ema = EMA(self.model, config.ema) if config.ema > 0 else None
        self.iteration = 0
        self.total = self._planned_total()
        self.schedule = LRSchedule(config, self.total) if self.total else None
        self.best: dict[str, Any] | None = None
        self.last_val: dict[str, Any] | None = None
        self.elapsed_s = 0.0
        self._lo, self._hi = spec.value_range

    # ----------------------------------------------------------------------------------------- set-up

    @classmethod
    def create(cls, config: TrainConfig, prep_progress: PrepProgress | None = None) -> Trainer:
        """Check every input (model, sizes, folders, images), prepare the data and build a fresh run.

        Every problem is reported here, before the first iteration and before ``out`` is written to.
        """
        spec, device = _check_config(config)
        # Absolute paths, so that --resume works from any working directory.
        config.train_dirs = [str(Path(d).resolve()) for d in config.train_dirs]
        for name in ("val_dir", "init", "lr_cache"):
            if getattr(config, name) is not None:
                setattr(config, name, str(Path(getattr(config, name)).resolve()))
        out = Path(config.out)
        if (out / "last.pt").exists():
            raise UsageError(f"{out} already holds a run (last.pt): continue it with --resume or pick another --out")
        train_pairs, val_pairs, val_label = _prepare_data(config, device, prep_progress)
        out.mkdir(parents=True, exist_ok=True)
        trainer = cls(config, spec, train_pairs, val_pairs, val_label, device)
        _atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
        return trainer

    @classmethod
    def resume(
        cls,
        out: str | os.PathLike[str],
        device: str | None = None,
        prep_progress: PrepProgress | None = None,
        *,
        cache_dir: str | None = None,
        offline: bool | None = None,
    ) -> Trainer:
        """Continue the run in ``out`` from its ``last.pt``: weights, EMA, optimiser, schedule and RNG states.

        ``device``, ``cache_dir`` and ``offline``, when given, replace the saved machine settings.
        """
        from srcli.hub.checkpoint import read_checkpoint

        path = Path(out) / "last.pt"
        if not path.is_file():
            raise UsageError(f"nothing to resume: {path} does not exist")
        state = read_checkpoint(path)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "config" not in state:
            raise UsageError(f"{path} is not a srcli training checkpoint")
        config = TrainConfig.from_dict(state["config"])
        config.out = str(Path(out))
        if device is not None:
            config.device = device
        if cache_dir is not None:
            config.cache_dir = cache_dir
        if offline is not None:
            config.offline = offline
        spec, dev = _check_config(config, resuming=True)
        train_pairs, val_pairs, val_label = _prepare_data(config, dev, prep_progress)
        trainer = cls(config, spec, train_pairs, val_pairs, val_label, dev, resuming=True)
        trainer._restore(state)
        return trainer

    def _planned_total(self) -> int | None:
        c = self.config
        if c.iters is not None:
            return c.iters
        if c.epochs is not None:
            return c.epochs * self.sampler.iters_per_epoch
        return None  # budget run: fixed by calibrate()

    @property
    def val_every(self) -> int:
        """Iterations between validations (the run also validates at its last iteration)."""
        return validation_interval(self.total or 1, self.config.val_every)

    # ----------------------------------------------------------------------------------------- steps

    def _forward(self, module: torch.nn.Module, lr: torch.Tensor) -> torch.Tensor:
        """The model on [0, 1] input, mapped through its value range, output back on [0, 1]."""
        y = module(lr * (self._hi - self._lo) + self._lo)
        return (y.float() - self._lo) / (self._hi - self._lo)

    def step(self) -> torch.Tensor:
        """One optimisation step; returns the (detached, on-device) L1 loss of the batch."""
        assert self.schedule is not None, "call calibrate() first on a time-budget run"
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule(self.iteration)
        lr_img, hr_img = self.sampler.next_batch()
        self.model.train()
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            sr = self._forward(self.model, lr_img)
        loss = F.l1_loss(sr, hr_img)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.iteration += 1
        return loss.detach()

    @property
    def eval_module(self) -> torch.nn.Module:
        """The weights that are validated and exported: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def validate(self) -> dict[str, Any]:
        """PSNR / SSIM on Y of the eval weights on the validation images, with the ``srcli eval`` protocol."""
        from srcli.engine.inference import run_model
        from srcli.eval.protocol import score
        from srcli.hub.loading import LoadedModel

        started = time.perf_counter()
        module = self.eval_module
        was_training = module.training
        module.eval()
        loaded = LoadedModel(
            spec=self.spec, scale=self.config.scale, module=module, weights_path=None, weights_sha256=None
        )
        psnrs, ssims = [], []
        for pair in self.val_pairs:
            lr = pair.lr.to(self.device).float().div_(255.0)[None]
            sr = run_model(loaded, lr)[0].cpu()
            p, s = score(sr, pair.hr, self.config.scale)
            psnrs.append(p)
            ssims.append(s)
        module.train(was_training)
        return {
            "iteration": self.iteration,
            "dataset": self.val_label,
            "psnr": sum(psnrs) / len(psnrs),
            "ssim": sum(ssims) / len(ssims),
            "images": len(psnrs),
            "seconds": round(time.perf_counter() - started, 3),
        }

    def calibrate(self, budget_s: float, warm: int = 5, timed: int | None = None) -> int:
        """Fix the run length for a time budget: time ``timed`` steps and one validation on throw-away copies.

        The model, optimiser, EMA and sampler are restored afterwards, so the run itself is the same
        as an ``iters`` run of the resulting length.
        """
        started = time.perf_counter()
        saved = (
            copy.deepcopy(self.model.state_dict()),
            copy.deepcopy(self.optimizer.state_dict()),
            copy.deepcopy(self.ema.module.state_dict()) if self.ema else None,
            self.ema.updates if self.ema else 0,
            self.sampler.state_dict(),
            torch.get_rng_state(),
        )
        timed = timed or (50 if self.device.type == "cuda" else 25)  # GPU steps are short: time more of them
        probe = LRSchedule(self.config, 10**6)
        self.schedule = probe
        for _ in range(warm):
            self.step()
        self._sync()
        t0 = time.perf_counter()
        for _ in range(timed):
            self.step()
        self._sync()
        step_s = (time.perf_counter() - t0) / timed
        val_s = 0.0
        for _ in range(2 if self.device.type == "cuda" else 1):  # the first CUDA pass also tunes cuDNN
            val_s = self.validate()["seconds"] if self.val_pairs else 0.0
        model_state, opt_state, ema_state, ema_updates, sampler_state, rng = saved
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(opt_state)
        if self.ema is not None:
            self.ema.module.load_state_dict(ema_state)
            self.ema.updates = ema_updates
        self.sampler.load_state_dict(sampler_state)
        torch.set_rng_state(rng)
        self.iteration = 0
        remaining = budget_s - (time.perf_counter() - started)
        # Ten validations and checkpoints, plus 3% slack for logging and the final save.
        usable = 0.97 * remaining - 11 * (val_s + 0.2)
        self.total = max(1, int(usable / step_s))
        # From here on the run is an ``iters`` run (the budget is kept in the log's calibrate record).
        self.config.iters, self.config.budget_s = self.total, None
        self.schedule = LRSchedule(self.config, self.total)
        self._log(
            {
                "event": "calibrate",
                "budget_s": budget_s,
                "step_s": step_s,
                "val_s": val_s,
                "iters": self.total,
                "seconds": time.perf_counter() - started,
            }
        )
        _atomic_write_text(self.out / "config.json", json.dumps(self.config.to_dict(), indent=2) + "\n")
        return self.total

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ----------------------------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (and the weights, for loading as a model)."""
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "params": _cpu_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.iteration,
            "total": self.total,
            "sampler": self.sampler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "config": self.config.to_dict(),
            "best": self.best,
            "last_val": self.last_val,
            "elapsed_s": self.elapsed_s,
            "srcli_meta": self.metadata(),
        }
        if self.ema is not None:
            state["params_ema"] = _cpu_state(self.ema.module)
            state["ema"] = self.ema.state_dict()
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["params"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["params_ema"])
            self.ema.updates = state["ema"]["updates"]
        self.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.iteration = state["iteration"]
        self.total = state["total"]
        self.schedule = LRSchedule(self.config, self.total)
        self.best = state.get("best")
        self.last_val = state.get("last_val")
        self.elapsed_s = state.get("elapsed_s", 0.0)

    def metadata(self) -> dict[str, str]:
        """Provenance as strings (safetensors metadata; also in checkpoints as ``srcli_meta``)."""
        best = self.best or {}
        return {
            "format": "srcli",
            "architecture": self.spec.name,
            "arch": self.spec.arch or "",
            "arch_kwargs": json.dumps(self.spec.arch_kwargs, sort_keys=True),
            "scale": str(self.config.scale),
            "data": "+".join(Path(d).name for d in self.config.train_dirs),
            "train_images": str(self.num_train_images),
            "iterations": str(self.iteration),
            "val_dataset": self.val_label,
            "val_psnr": f"{best['psnr']:.4f}" if best else "",
            "val_ssim": f"{best['ssim']:.5f}" if best else "",
            "val_iteration": str(best.get("iteration", "")),
            "weights": "ema" if self.ema is not None else "raw",
            "srcli_version": __version__,
        }

    def save(self, name: str = "last.pt") -> Path:
        """Write the full state to ``out/name`` atomically."""
        path = self.out / name
        _atomic_save(self.state_dict(), path)
        return path

    def _log(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        with (self.out / "log.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    # ----------------------------------------------------------------------------------------- loop

    def run(self, on_progress: ProgressCallback | None = None, stop_at: int | None = None) -> dict[str, Any]:
        """Train to the planned length (or to ``stop_at`` iterations, saving ``last.pt`` there).

        Validates every ``val_every`` iterations and at the end, keeping ``best.pt``; on Ctrl-C
        saves ``last.pt`` first, so ``--resume`` continues from the interruption.
        """
        c = self.config
        if self.total is None:
            assert c.budget_s is not None
            self.calibrate(c.budget_s)
        assert self.total is not None and self.schedule is not None
        end = self.total if stop_at is None else min(stop_at, self.total)
        self._log(
            {
                "event": "start" if self.iteration == 0 else "resume",
                "iteration": self.iteration,
                "total": self.total,
                "config": c.to_dict(),
                "device": str(self.device),
                "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
                "train_images": self.num_train_images,
                "iters_per_epoch": self.sampler.iters_per_epoch,
                "init": {"loaded": self.init_report[0], "not_loaded": self.init_report[1]}
                if self.init_report
                else None,
                "amp": "bf16" if self.amp else "off",
            }
        )
        loss_sum = torch.zeros((), device=self.device)
        window_n, window_start = 0, time.perf_counter()
        session_start, session_iters = time.perf_counter(), 0
        base_elapsed = self.elapsed_s
        try:
            while self.iteration < end:
                loss_sum += self.step()
                window_n += 1
                session_iters += 1
                self.elapsed_s = base_elapsed + time.perf_counter() - session_start
                done = self.iteration
                if done % c.log_every == 0 or done == end:
                    mean_loss = (loss_sum / window_n).item()
                    now = time.perf_counter()
                    it_s = window_n / max(now - window_start, 1e-9)
                    self._log(
                        {
                            "event": "train",
                            "iteration": done,
                            "loss": mean_loss,
                            "lr": self.schedule(done - 1),
                            "it_per_s": it_s,
                            "elapsed_s": self.elapsed_s,
                        }
                    )
                    if on_progress:
                        rate = session_iters / max(now - session_start, 1e-9)
                        on_progress(self._status(mean_loss, it_s, (self.total - done) / rate))
                    loss_sum.zero_()
                    window_n, window_start = 0, now
                if done % self.val_every == 0 or done == self.total:
                    self._validate_and_save(on_progress)
                elif done == end:
                    self.save("last.pt")
        except KeyboardInterrupt:
            self.save("last.pt")
            self._log({"event": "interrupted", "iteration": self.iteration})
            raise
        summary = {
            "iterations": self.iteration,
            "total": self.total,
            "best": self.best,
            "last_val": self.last_val,
            "elapsed_s": self.elapsed_s,
            "it_per_s": session_iters / max(time.perf_counter() - session_start, 1e-9),
            "out": str(self.out),
        }
        if self.iteration >= self.total:
            self._log({"event": "end", **summary})
        return summary

    def _status(self, loss: float | None, it_s: float | None, eta: float | None, event: str = "train") -> TrainStatus:
        assert self.total is not None and self.schedule is not None
        return TrainStatus(
            iteration=self.iteration,
            total=self.total,
            loss=loss,
            lr=self.schedule(max(self.iteration - 1, 0)),
            it_per_s=it_s,
            eta_s=eta,
            val_psnr=self.last_val["psnr"] if self.last_val else None,
            best_psnr=self.best["psnr"] if self.best else None,
            event=event,
        )

    def _validate_and_save(self, on_progress: ProgressCallback | None) -> None:
        if self.val_pairs:
            self.last_val = self.validate()
            self._log({"event": "val", **self.last_val})
            if self.best is None or self.last_val["psnr"] > self.best["psnr"]:
                self.best = dict(self.last_val)
                self.save("best.pt")
        self.save("last.pt")
        if on_progress:
            on_progress(self._status(None, None, None, event="val"))


# --------------------------------------------------------------------------------------------- checks


def _check_config(config: TrainConfig, resuming: bool = False) -> tuple[ModelSpec, torch.device]:
    """The model and device, after checking every setting that needs no data."""
    spec = get_model(config.model)
    spec.check_scale(config.scale)
    if not spec.implemented:
        spec.build(config.scale)  # raises NotImplementedModelError with the registry's reason
    if not spec.needs_weights:
        raise UsageError(f"model '{spec.name}' has no parameters to train")
    config.model = spec.name
    lengths = [x for x in (config.iters, config.epochs, config.budget_s) if x is not None]
    if len(lengths) != 1:
        raise UsageError("give exactly one of --iters, --epochs or --minutes")
    if any(x <= 0 for x in lengths):
        raise UsageError("--iters / --epochs / --minutes must be positive")
    if config.batch_size < 1:
        raise UsageError("--batch must be at least 1")
    if config.val_every is not None and config.val_every < 1:
        raise UsageError(f"--val-every must be at least 1, not {config.val_every}")
    s, p = config.scale, config.patch_size
    if p % s:
        raise UsageError(f"--patch-size {p} is not a multiple of the scale {s} (try {p - p % s or s})")
    if p // s < spec.min_size:
        raise UsageError(
            f"--patch-size {p} gives {p // s} px LR patches, smaller than the {spec.min_size} px "
            f"'{spec.name}' needs: use at least {spec.min_size * s}"
        )
    if config.lr <= 0:
        raise UsageError("--lr must be positive")
    if not 0 <= config.ema < 1:
        raise UsageError("--ema must be in [0, 1)")
    if config.amp not in {"auto", "bf16", "off"}:
        raise UsageError(f"--amp '{config.amp}' is not one of auto, bf16, off")
    LRSchedule(config, 100)  # validates the schedule name
    if config.init and not Path(config.init).is_file() and not resuming:
        raise UsageError(f"--init {config.init}: no such file")
    device = _pick_device(config.device)
    if config.amp == "bf16" and device.type != "cuda":
        raise UsageError("--amp bf16 needs a CUDA device")
    return spec, device


def _prepare_data(
    config: TrainConfig, device: torch.device, progress: PrepProgress | None
) -> tuple[list[Pair], list[Pair], str]:
    """Read and check the training and validation images, then make (or read cached) LR images."""
    train_paths = list_images(config.train_dirs, role="training", recursive=True)
    if config.val_dir is not None:
        val_paths = list_images([config.val_dir], role="validation")
        val_label = Path(config.val_dir).name
    elif config.val_dataset:
        from srcli.eval.datasets import DISPLAY_NAMES, dataset_files, resolve_dataset_name

        key = resolve_dataset_name(config.val_dataset)
        val_label = DISPLAY_NAMES[key]
        try:
            val_paths = dataset_files(key, cache_dir=config.cache_dir, offline=config.offline)
        except SrcliError as exc:
            raise DatasetError(f"validation set {val_label}: {exc} (or give --val-dir)") from None
    else:
        val_paths, val_label = [], ""
    images = check_patch_fit(read_hr(train_paths, config.scale), config.patch_size, config.skip_small)
    val_pairs = load_val_pairs(val_paths, config.scale, device) if val_paths else []
    cache = config.lr_cache or str(Path(config.out) / "lr_cache")
    pairs = make_pairs(images, config.scale, cache_dir=cache, device=device, progress=progress)
    return pairs, val_pairs, val_label
