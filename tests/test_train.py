"""``srcli train``: a tiny run learns and checkpoints, resumes exactly, exports loadable weights, rejects bad input."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srcli.cli import main
from srcli.errors import DatasetError, UsageError, WeightsError
from srcli.hub.loading import load_model
from srcli.train.data import Pair, PatchSampler
from srcli.train.export import export_run
from srcli.train.loop import LRSchedule, TrainConfig, Trainer, validation_interval


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny batches run fastest on one thread (and do not fight other jobs for the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _save_crop(src: Path, dst: Path, size: int, top: int = 0, left: int = 0) -> None:
    with Image.open(src) as im:
        im.convert("RGB").crop((left, top, left + size, top + size)).save(dst)


@pytest.fixture(scope="module")
def folders(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three 80 px training crops and one 48 px validation crop of Set5 (small: the tests stay fast)."""
    root = tmp_path_factory.mktemp("data")
    set5 = shared_dir / "data" / "benchmarks" / "Set5"
    train, val = root / "train", root / "val"
    train.mkdir()
    val.mkdir()
    for name, top, left in (("baby", 200, 200), ("bird", 100, 100), ("butterfly", 60, 60)):
        _save_crop(set5 / f"{name}.png", train / f"{name}.png", 80, top, left)
    _save_crop(set5 / "head.png", val / "head.png", 48, 100, 100)
    return train, val


def _config(folders: tuple[Path, Path], out: Path, **kw) -> TrainConfig:
    train, val = folders
    settings = dict(
        model="survey-net",
        scale=2,
        train_dirs=[str(train)],
        val_dir=str(val),
        out=str(out),
        iters=12,
        batch_size=2,
        patch_size=32,
        lr=2e-3,
        device="cpu",
        log_every=1,
    )
    settings.update(kw)
    return TrainConfig(**settings)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_run(folders: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Trainer, float, float]:
    """A 12-iteration run, and the L1 loss of its model on one fixed batch before and after training."""
    out = tmp_path_factory.mktemp("run") / "tiny"
    trainer = Trainer.create(_config(folders, out, val_every=6))
    probe = PatchSampler(
        [Pair("p", *_pair_tensors(trainer))], scale=2, patch_size=32, batch_size=8, seed=123, augment=False
    )
    lr, hr = probe.next_batch()

    def fixed_loss() -> float:
        with torch.no_grad():
            return torch.nn.functional.l1_loss(trainer.model(lr), hr).item()

    before = fixed_loss()
    trainer.run()
    return trainer, before, fixed_loss()


def _pair_tensors(trainer: Trainer) -> tuple[torch.Tensor, torch.Tensor]:
    """The first training image's (HR, LR) as the trainer holds them (unpacked from the sampler)."""
    flat, _, width, plane = trainer.sampler._hr
    n = int(plane[0]) * 3
    hr = flat[:n].view(3, int(plane[0]) // int(width[0]), int(width[0]))
    lflat, _, lwidth, lplane = trainer.sampler._lr
    m = int(lplane[0]) * 3
    lr = lflat[:m].view(3, int(lplane[0]) // int(lwidth[0]), int(lwidth[0]))
    return hr, lr


# --------------------------------------------------------------------------------------- training


def test_a_tiny_run_lowers_the_loss(tiny_run) -> None:
    _, before, after = tiny_run
    assert after < 0.6 * before, (before, after)


def test_the_run_writes_checkpoints_config_and_a_json_log(tiny_run) -> None:
    trainer, _, _ = tiny_run
    out = trainer.out
    assert {"best.pt", "last.pt", "config.json", "log.jsonl"} <= {p.name for p in out.iterdir()}
    from srcli.atomic import stale_temp_files

    assert stale_temp_files(out) == []  # atomic writes leave no temporaries
    events = _log(out)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert [e["iteration"] for e in events if e["event"] == "train"] == list(range(1, 13))
    vals = [e for e in events if e["event"] == "val"]
    assert [v["iteration"] for v in vals] == [6, 12]
    assert all(math.isfinite(v["psnr"]) and 0 < v["ssim"] <= 1 for v in vals)
    assert json.loads((out / "config.json").read_text())["model"] == "survey-net"


def test_the_checkpoint_loads_as_a_model_with_the_ema_weights(tiny_run) -> None:
    trainer, _, _ = tiny_run
    loaded = load_model("survey-net", 2, weights=trainer.out / "last.pt")
    x = torch.rand(1, 3, 20, 21)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), trainer.ema.module(x))
        assert not torch.equal(loaded.module(x), trainer.model.eval()(x))  # the EMA, not the raw weights


def test_validation_agrees_with_srcli_eval(tiny_run, folders) -> None:
    """The PSNR logged for best.pt is what the evaluation command measures for that checkpoint."""
    from srcli.eval.runner import evaluate

    trainer, _, _ = tiny_run
    best = trainer.best
    result = evaluate("survey-net", None, 2, data_dir=folders[1], weights=trainer.out / "best.pt", device="cpu")
    assert result.psnr == pytest.approx(best["psnr"], abs=1e-6)
    assert result.ssim == pytest.approx(best["ssim"], abs=1e-8)


def test_resume_takes_the_same_steps_as_an_uninterrupted_run(folders, tmp_path) -> None:
    whole = Trainer.create(_config(folders, tmp_path / "whole", iters=6, val_every=6))
    whole.run()
    part = Trainer.create(_config(folders, tmp_path / "part", iters=6, val_every=6))
    part.run(stop_at=3)
    del part
    resumed = Trainer.resume(tmp_path / "part", device="cpu")
    assert resumed.iteration == 3
    resumed.run()
    losses_whole = [e["loss"] for e in _log(tmp_path / "whole") if e["event"] == "train"]
    losses_part = [e["loss"] for e in _log(tmp_path / "part") if e["event"] == "train"]
    assert losses_part == losses_whole  # bit-identical on the CPU, the steps after the restart included
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(whole.ema.module.parameters(), resumed.ema.module.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(
        whole.optimizer.state_dict()["state"][0]["exp_avg"], resumed.optimizer.state_dict()["state"][0]["exp_avg"]
    )


def test_init_loads_the_body_of_another_scale(tiny_run, folders, tmp_path) -> None:
    trainer, _, _ = tiny_run
    x3 = Trainer.create(_config(folders, tmp_path / "x3", scale=3, patch_size=48, init=str(trainer.out / "best.pt")))
    loaded, skipped = x3.init_report
    assert skipped == ["upsampler.0.bias", "upsampler.0.weight"]  # only the scale-specific tail is new
    assert torch.equal(x3.model.head.weight, trainer.ema.module.head.weight)


# --------------------------------------------------------------------------------------- export


def test_export_loads_through_weights(tiny_run, tmp_path) -> None:
    trainer, _, _ = tiny_run
    path = tmp_path / "m.safetensors"
    meta = export_run(trainer.out, path)
    assert meta["architecture"] == "survey-net" and meta["scale"] == "2"
    assert meta["iterations"] == str(trainer.best["iteration"])
    assert float(meta["val_psnr"]) == pytest.approx(trainer.best["psnr"], abs=1e-4)
    best = load_model("survey-net", 2, weights=trainer.out / "best.pt")
    loaded = load_model("hgsr", 2, weights=path)  # by alias, from the safetensors export
    x = torch.rand(1, 3, 18, 19)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), best.module(x))


def test_fp16_export_is_close(tiny_run, tmp_path) -> None:
    trainer, _, _ = tiny_run
    path = tmp_path / "m16.safetensors"
    export_run(trainer.out, path, which="last", dtype="fp16")
    from safetensors.torch import load_file

    assert all(t.dtype == torch.float16 for t in load_file(str(path)).values())
    loaded = load_model("survey-net", 2, weights=path)
    x = torch.rand(1, 3, 18, 19)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), trainer.ema.module(x), atol=2e-2, rtol=0)


def test_export_reparameterizes_where_the_model_can(tiny_run, tmp_path, monkeypatch) -> None:
    from srcli.archs.survey_net import SurveyNet

    calls = []
    monkeypatch.setattr(SurveyNet, "reparameterize", lambda self: calls.append(type(self)), raising=False)
    meta = export_run(tiny_run[0].out, tmp_path / "m.safetensors")
    assert calls == [SurveyNet] and meta["reparameterized"] == "true"


def test_export_for_another_model_or_scale_is_refused(tiny_run, tmp_path) -> None:
    trainer, _, _ = tiny_run
    path = tmp_path / "m.safetensors"
    export_run(trainer.out, path)
    with pytest.raises(WeightsError, match=r"holds 'survey-net' x2 weights .*not 'survey-net' x3"):
        load_model("survey-net", 3, weights=path)
    with pytest.raises(WeightsError, match=r"holds 'survey-net' x2 weights .*not 'imdn' x2"):
        load_model("imdn", 2, weights=path)
    with pytest.raises(WeightsError, match=r"holds 'survey-net' x2"):
        load_model("survey-net", 4, weights=trainer.out / "last.pt")  # training checkpoints too


# --------------------------------------------------------------------------------------- data


def test_patches_are_aligned_and_augmented() -> None:
    """With HR = nearest-upsampled LR, every HR patch must be the nearest upsampling of its LR patch."""
    gen = torch.Generator().manual_seed(0)
    pairs = []
    for h, w in ((9, 11), (12, 8)):
        lr = torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8)
        hr = lr.repeat_interleave(3, -2).repeat_interleave(3, -1)
        pairs.append(Pair(f"{h}x{w}", hr, lr))
    sampler = PatchSampler(pairs, scale=3, patch_size=15, batch_size=64, seed=1)
    lr, hr = sampler.next_batch()
    assert lr.shape == (64, 3, 5, 5) and hr.shape == (64, 3, 15, 15)
    torch.testing.assert_close(hr, lr.repeat_interleave(3, -2).repeat_interleave(3, -1), rtol=0, atol=0)
    # Each LR patch is one of the 8 flips / rotations of a crop of its source image.
    seen = set()
    for patch in (lr * 255).round().to(torch.uint8):
        found = None
        for k, pair in enumerate(pairs):
            windows = pair.lr.unfold(1, 5, 1).unfold(2, 5, 1)  # (3, nh, nw, 5, 5)
            for t in range(8):
                cand = torch.rot90(patch, -(t % 4), dims=(1, 2))
                cand = cand.flip(-1) if t >= 4 else cand
                hit = (windows == cand[:, None, None]).all(-1).all(-1).all(0)
                if hit.any():
                    found = (k, t)
                    break
            if found:
                break
        assert found is not None
        seen.add(found[1])
    assert len(seen) == 8  # every dihedral transform occurs in 64 draws


def test_sampler_visits_every_image_once_per_epoch() -> None:
    pairs = [
        Pair(str(i), torch.full((3, 4, 4), i, dtype=torch.uint8), torch.full((3, 2, 2), i, dtype=torch.uint8))
        for i in range(5)
    ]
    sampler = PatchSampler(pairs, scale=2, patch_size=2, batch_size=5, seed=0)
    for _ in range(3):
        lr, _ = sampler.next_batch()
        assert sorted((lr[:, 0, 0, 0] * 255).round().int().tolist()) == [0, 1, 2, 3, 4]


def test_an_epoch_is_one_patch_per_image(folders, tmp_path) -> None:
    trainer = Trainer.create(_config(folders, tmp_path / "run", iters=None, epochs=5, batch_size=2))
    assert trainer.total == 5 * 2  # three images in batches of two: two iterations per epoch


def test_schedule_warms_up_then_follows_cosine_or_steps() -> None:
    cfg = TrainConfig(model="survey-net", scale=2, train_dirs=["x"], out="y", lr=1e-3, warmup=10, min_lr_ratio=0.1)
    cos = LRSchedule(cfg, total=110)
    assert cos(0) == pytest.approx(1e-4) and cos(9) == pytest.approx(1e-3)
    assert cos(60) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert cos(110) == pytest.approx(1e-4)
    cfg.schedule, cfg.milestones, cfg.gamma = "multistep", [0.5, 80], 0.5
    step = LRSchedule(cfg, total=110)
    assert [step(i) for i in (10, 54, 55, 79, 80)] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4])


# --------------------------------------------------------------------------------------- bad input


def _png(path: Path, size: tuple[int, int]) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def good(tmp_path: Path) -> tuple[Path, Path]:
    train, val = tmp_path / "train", tmp_path / "val"
    train.mkdir()
    val.mkdir()
    _png(train / "a.png", (40, 36))
    _png(val / "v.png", (32, 32))
    return train, val


def _create(train: Path, val: Path, out: Path, **kw) -> Trainer:
    settings = dict(
        model="survey-net",
        scale=2,
        train_dirs=[str(train)],
        val_dir=str(val),
        out=str(out),
        iters=2,
        batch_size=1,
        patch_size=32,
        device="cpu",
    )
    settings.update(kw)
    return Trainer.create(TrainConfig(**settings))


def test_empty_or_missing_training_folder(good, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="empty holds no images"):
        _create(empty, good[1], tmp_path / "run")
    with pytest.raises(DatasetError, match="training folder .*nowhere does not exist"):
        _create(tmp_path / "nowhere", good[1], tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing is written before the checks pass


def test_training_folders_are_searched_recursively(tmp_path) -> None:
    from srcli.train.data import list_images

    (tmp_path / "T91").mkdir()
    (tmp_path / ".cache").mkdir()
    _png(tmp_path / "T91" / "b.png", (8, 8))
    _png(tmp_path / "a.bmp", (8, 8))
    _png(tmp_path / ".cache" / "c.png", (8, 8))
    (tmp_path / "readme.txt").write_text("x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images([tmp_path], recursive=True)] == [
        "T91/b.png",
        "a.bmp",
    ]


def test_unreadable_training_image(good, tmp_path) -> None:
    (good[0] / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match="broken.png"):
        _create(good[0], good[1], tmp_path / "run")


def test_images_smaller_than_the_patch(good, tmp_path) -> None:
    _png(good[0] / "tiny.png", (30, 50))
    with pytest.raises(DatasetError, match=r"tiny.png \(30x50\).*--skip-small"):
        _create(good[0], good[1], tmp_path / "run")
    trainer = _create(good[0], good[1], tmp_path / "run", skip_small=True)
    assert trainer.num_train_images == 1


def test_missing_validation_folder(good, tmp_path) -> None:
    with pytest.raises(DatasetError, match="validation folder .*gone does not exist"):
        _create(good[0], tmp_path / "gone", tmp_path / "run")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"patch_size": 33}, "not a multiple of the scale"),
        ({"patch_size": 20}, "smaller than the 15 px 'survey-net' needs: use at least 30"),
        ({"iters": None}, "exactly one of --iters, --epochs or --minutes"),
        ({"epochs": 3}, "exactly one of"),
        ({"model": "bicubic"}, "no parameters to train"),
        ({"schedule": "linear"}, "schedule 'linear'"),
    ],
)
def test_bad_settings_are_usage_errors(good, tmp_path, kw, message) -> None:
    with pytest.raises(UsageError, match=message):
        _create(good[0], good[1], tmp_path / "run", **kw)


def test_an_existing_run_is_not_overwritten(good, tmp_path) -> None:
    _create(good[0], good[1], tmp_path / "run").run()
    with pytest.raises(UsageError, match="already holds a run.*--resume"):
        _create(good[0], good[1], tmp_path / "run")


# --------------------------------------------------------------------------------------- CLI


def test_cli_trains_with_the_survey_spellings_and_exports(good, tmp_path, capsys) -> None:
    train, val = good
    out, weights = tmp_path / "run", tmp_path / "w.safetensors"
    args = ["train", "-m", "survey-net", "-s", "2", "--train_dir", str(train), "--val_dir", str(val)]
    args += ["--iters", "2", "--batch_size", "1", "--patch_size", "32", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    assert (out / "best.pt").is_file()
    assert main(["train", "--resume", "-o", str(out), "--lr", "0.1"]) == 2  # contradicts the saved settings
    assert "saved settings" in capsys.readouterr().err.replace("\n", " ")
    assert main(["train", "--resume", "-o", str(out), "--lr", "5e-4"]) == 0  # the saved value: nothing left to do
    assert main(["train", "export", str(out), "-o", str(weights), "--dtype", "fp16"]) == 0
    assert load_model("survey-net", 2, weights=weights).weights_path == weights
    args = ["train", "-m", "survey-net", "-s", "2", "--train-dir", str(tmp_path / "none"), "--iters", "2"]
    assert main([*args, "-o", str(tmp_path / "run2")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_cli_module_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, srcli.cli.train, srcli.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_speaks_the_shared_option_names(good, tmp_path, capsys) -> None:
    train, val = good
    out = tmp_path / "run"
    args = ["train", "-m", "survey-net", "-s", "2", "--train-dir", str(train), "--val-dir", str(val), "--iters", "2"]
    args += ["--patch-size", "32", "--device", "cpu", "--threads", "1", "--offline", "--cache-dir", str(tmp_path)]
    assert main([*args, "--batch", "1", "--batch-size", "2", "--output", str(out)]) == 2  # one value, two spellings
    assert "--batch is given twice" in capsys.readouterr().err
    assert main([*args, "--batch", "1", "--output", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["batch_size"] == 1 and config["offline"] is True and config["cache_dir"] == str(tmp_path)
    assert main(["train", "--resume", "--output", str(out), "--batch", "2"]) == 2
    assert "--batch (saved: 1, given: 2)" in capsys.readouterr().err
    # No -s: the model's default scale, as in every command.
    base = ["train", "-m", "survey-net", "--train-dir", str(train), "--val-dir", str(val), "--iters", "1"]
    assert main([*base, "--patch-size", "64", "--batch", "1", "--device", "cpu", "-o", str(tmp_path / "x4")]) == 1
    assert "40x36" in capsys.readouterr().err  # trained at x4: the 40 px image is smaller than the 64 px patch
    assert main(["train", "--train-dir", str(train), "-o", str(tmp_path / "none")]) == 2
    assert "give --model" in capsys.readouterr().err


def test_validation_suits_a_smoke_run_and_a_long_one(good, tmp_path) -> None:
    assert validation_interval(20) == 100  # past the end: a smoke run validates once, at its end
    assert validation_interval(5_000) == 500  # a tenth of the run
    assert validation_interval(10**6) == 1000
    assert validation_interval(20, asked=5) == 5 and validation_interval(0) >= 1
    trainer = _create(good[0], good[1], tmp_path / "run", iters=20)
    trainer.run()
    assert [e["iteration"] for e in _log(trainer.out) if e["event"] == "val"] == [20]
    with pytest.raises(UsageError, match="--val-every must be at least 1"):
        _create(good[0], good[1], tmp_path / "run0", val_every=-1)


def test_the_validation_benchmark_obeys_offline_and_the_cache(good, tmp_path) -> None:
    config = TrainConfig(
        model="survey-net",
        scale=2,
        train_dirs=[str(good[0])],
        out=str(tmp_path / "run"),
        iters=2,
        batch_size=1,
        patch_size=32,
        device="cpu",
        val_dataset="set14",
        cache_dir=str(tmp_path / "empty-cache"),
        offline=True,
    )
    with pytest.raises(DatasetError, match="validation set Set14: .*offline"):
        Trainer.create(config)
