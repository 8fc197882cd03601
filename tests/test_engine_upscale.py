"""The upscale engine: seamless tiles, batching, out-of-memory and non-finite fallbacks, outscale."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from srcli.engine.devices import pick_device, resolve_precision
from srcli.engine.tiling import feather_ramp, spread_starts, tiled_forward
from srcli.engine.upscale import EngineOptions, plan_tile, upscale_tensor
from srcli.errors import DeviceError, DeviceOutOfMemoryError
from srcli.eval.protocol import make_lr, modcrop
from srcli.hub.loading import LoadedModel, load_model
from srcli.io.images import read_rgb_uint8
from srcli.registry import get_model


@pytest.fixture(scope="module")
def imdn(shared_dir: Path) -> LoadedModel:
    return load_model("imdn", 4, weights=shared_dir / "weights" / "IMDN_x4.pth")


@pytest.fixture(scope="module")
def rlfn(shared_dir: Path) -> LoadedModel:
    return load_model("rlfn", 4, weights=shared_dir / "weights" / "rlfn_x4.pth")


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


@pytest.mark.parametrize(
    ("size", "tile", "overlap"), [(100, 48, 16), (64, 64, 8), (65, 64, 8), (300, 96, 0), (7, 48, 16)]
)
def test_spread_starts_cover_with_overlap_and_no_sliver(size: int, tile: int, overlap: int) -> None:
    starts = spread_starts(size, tile, overlap)
    side = min(tile, size)
    assert starts[0] == 0 and starts[-1] + side == size
    for a, b in zip(starts, starts[1:], strict=False):
        assert b > a
        assert a + side - b >= overlap  # neighbours share at least the overlap
        assert b - a <= side  # no gap


def test_feather_ramp_is_positive_and_flat_inside() -> None:
    w = feather_ramp(40, 8, True, True, torch.device("cpu"))
    assert bool((w > 0).all()) and bool((w <= 1).all())
    assert torch.equal(w[8:32], torch.ones(24))
    assert torch.allclose(w[:8], w[-8:].flip(0))
    border = feather_ramp(40, 8, False, True, torch.device("cpu"))
    assert torch.equal(border[:32], torch.ones(32))


@pytest.mark.slow
def test_tiled_matches_whole_image_on_set5(imdn: LoadedModel, shared_dir: Path) -> None:
    """Tiles of 48 px with the registry's default overlap: PSNR(tiled, whole) >= 45 dB on every Set5
    image (the benchmark's x4 bicubic LR). IMDN's channel attention uses whole-input statistics, so
    tiles cannot match exactly; 48 px tiles are far smaller than ``--tile auto`` picks."""
    default_overlap = get_model("imdn").tile_overlap
    for path in sorted((shared_dir / "data" / "benchmarks" / "Set5").glob("*.png")):
        x = make_lr(modcrop(read_rgb_uint8(path), 4), 4)[None]
        whole = upscale_tensor(imdn, x, EngineOptions(tile=0))
        tiled = upscale_tensor(imdn, x, EngineOptions(tile=48, batch=3))
        assert whole.tiles == 1 and tiled.tiles > 1 and tiled.overlap == default_overlap
        assert _psnr(whole.image, tiled.image) >= 45.0, path.name


@pytest.mark.parametrize("kind", ["flat", "gradient"])
@pytest.mark.slow
def test_no_seams_on_flat_and_gradient_images(rlfn: LoadedModel, imdn: LoadedModel, kind: str) -> None:
    """Max abs deviation of the tiled output from the whole-image output stays under 2 grey levels."""
    h, w = 100, 130
    if kind == "flat":
        x = torch.tensor([0.8, 0.4, 0.1]).view(1, 3, 1, 1).expand(1, 3, h, w).contiguous()
    else:
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        x = torch.stack([xx, yy, (xx + yy) / 2])[None]
    for model in (rlfn, imdn):
        whole = upscale_tensor(model, x, EngineOptions(tile=0)).image
        tiled = upscale_tensor(model, x, EngineOptions(tile=48))
        assert tiled.tiles == 12
        assert float((whole - tiled.image).abs().max()) * 255 < 2.0


@pytest.mark.slow
def test_batched_tiles_equal_one_at_a_time(rlfn: LoadedModel) -> None:
    x = torch.rand(1, 3, 70, 90)
    one = upscale_tensor(rlfn, x, EngineOptions(tile=32, batch=1)).image
    many = upscale_tensor(rlfn, x, EngineOptions(tile=32, batch=5)).image
    assert torch.allclose(one, many, atol=1e-5)


class _OomAbove(torch.nn.Module):
    """Wraps a model and raises the CUDA out-of-memory error for inputs larger than ``limit`` pixels."""

    def __init__(self, inner: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.calls = inner, limit, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if x.shape[0] * x.shape[-2] * x.shape[-1] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


@pytest.mark.slow
def test_out_of_memory_halves_batch_then_tile(rlfn: LoadedModel) -> None:
    x = torch.rand(1, 3, 120, 120)
    flaky = LoadedModel(rlfn.spec, 4, _OomAbove(rlfn.module, 60 * 60), None, None)
    result = upscale_tensor(flaky, x, EngineOptions(tile=0, batch=2))
    assert result.oom_retries >= 2 and result.tile is not None and result.tile <= 60 and result.batch == 1
    reference = upscale_tensor(rlfn, x, EngineOptions(tile=result.tile)).image
    assert torch.allclose(result.image, reference, atol=1e-5)


def test_out_of_memory_below_the_floor_fails_clearly(rlfn: LoadedModel) -> None:
    hopeless = LoadedModel(rlfn.spec, 4, _OomAbove(rlfn.module, 10), None, None)
    with pytest.raises(DeviceOutOfMemoryError, match="out of memory on cpu even with"):
        upscale_tensor(hopeless, torch.rand(1, 3, 80, 80), EngineOptions(tile=0))


class _NanInHalf(torch.nn.Module):
    """Gives NaN for the tiles whose top-left pixel is bright when run under reduced precision."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        if torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda"):
            bad = (x[:, 0, 0, 0] > 150).view(-1, 1, 1, 1)  # RLFN works in [0, 255]
            y = torch.where(bad, torch.full_like(y, float("nan")), y)
        return y


@pytest.mark.slow
def test_non_finite_tiles_are_run_again_in_fp32(rlfn: LoadedModel) -> None:
    x = torch.rand(1, 3, 64, 96) * 0.5
    x[..., :8, :8] = 0.9  # only the first tile trips the fault
    flaky = LoadedModel(rlfn.spec, 4, _NanInHalf(rlfn.module), None, None)
    result = upscale_tensor(flaky, x, EngineOptions(precision="bf16", tile=32, batch=2))
    assert result.refined_tiles == 1
    assert bool(torch.isfinite(result.image).all())
    fp32 = upscale_tensor(rlfn, x, EngineOptions(tile=32)).image
    assert _psnr(result.image, fp32) > 35  # the rest ran in bf16


def test_outscale_chains_passes_then_resizes() -> None:
    bicubic = load_model("bicubic", 2)
    x = torch.rand(1, 3, 20, 30)
    three = upscale_tensor(bicubic, x, EngineOptions(outscale=3))
    assert three.model_passes == 2 and tuple(three.image.shape) == (1, 3, 60, 90)
    half = upscale_tensor(bicubic, x, EngineOptions(outscale=1.5))
    assert half.model_passes == 1 and tuple(half.image.shape) == (1, 3, 30, 45)


@pytest.mark.slow
def test_self_ensemble_keeps_shape_and_stays_close(rlfn: LoadedModel) -> None:
    yy, xx = torch.meshgrid(torch.linspace(0, 6, 24), torch.linspace(0, 9, 40), indexing="ij")
    x = (0.5 + 0.4 * torch.sin(xx + yy)).expand(1, 3, 24, 40).contiguous()
    plain = upscale_tensor(rlfn, x, EngineOptions(tile=0)).image
    ens = upscale_tensor(rlfn, x, EngineOptions(tile=0, self_ensemble=True))
    assert ens.image.shape == plain.shape and ens.tiles == 8
    assert _psnr(plain, ens.image) > 35


def test_plan_tile_uses_registry_hints_off_cuda(rlfn: LoadedModel) -> None:
    cpu = torch.device("cpu")
    assert plan_tile(rlfn, 100, 100, EngineOptions(), cpu) == (None, 1)
    big = rlfn.spec.auto_tile + 1
    assert plan_tile(rlfn, big, 10, EngineOptions(), cpu) == (rlfn.spec.auto_tile, 1)
    assert plan_tile(rlfn, 100, 100, EngineOptions(tile=40, batch=3), cpu) == (40, 3)
    assert plan_tile(rlfn, 100, 100, EngineOptions(tile=0), cpu) == (None, 1)


def test_precision_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    from srcli.engine import cpu_features

    spec = get_model("imdn")
    cpu = torch.device("cpu")
    monkeypatch.setattr(cpu_features, "native_bf16", lambda: False)  # a CPU without native bf16
    assert resolve_precision(spec, cpu, "auto") == "fp32"
    assert resolve_precision(spec, cpu, "bf16") == "bf16"
    with pytest.raises(DeviceError, match="fp16 is not supported on the CPU"):
        resolve_precision(spec, cpu, "fp16")
    with pytest.raises(DeviceError, match="unknown precision"):
        resolve_precision(spec, cpu, "fp8")


def test_device_choice() -> None:
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert pick_device("auto").type in ("cpu", "mps")
        with pytest.raises(DeviceError, match="CUDA is not available"):
            pick_device("cuda:1")
    with pytest.raises(DeviceError, match="unknown device"):
        pick_device("tpu-9")


def test_tiled_forward_rejects_batches(rlfn: LoadedModel) -> None:
    with pytest.raises(ValueError, match="one image"):
        tiled_forward(rlfn, torch.rand(2, 3, 20, 20), tile=16, overlap=4)


# ----------------------------------------------------------------------------------- the library (srcli.upscale)


@pytest.mark.slow
def test_library_defaults_to_the_default_model_and_takes_one_options_record() -> None:
    import numpy as np

    import srcli
    from srcli.engine.options import RunOptions
    from srcli.errors import UsageError
    from srcli.registry import DEFAULT_MODEL

    rgb = (np.random.default_rng(0).random((18, 20, 3)) * 255).astype(np.uint8)
    default = srcli.upscale(rgb, device="cpu")
    assert default.shape == (72, 80, 3)  # the default model's default scale: x4
    named = srcli.upscale(rgb, DEFAULT_MODEL, 4, device="cpu")
    assert np.array_equal(default, named)
    options = RunOptions(model=DEFAULT_MODEL, scale=2, device="cpu", tile=0)
    by_record = srcli.upscale(rgb, options=options)
    assert by_record.shape == (36, 40, 3)
    assert np.array_equal(by_record, srcli.upscale(rgb, DEFAULT_MODEL, 2, device="cpu", tile=0))
    # Arguments given replace the record's fields; a loaded model brings its own name, scale and device.
    assert srcli.upscale(rgb, options=options, scale=3).shape == (54, 60, 3)
    loaded = load_model(DEFAULT_MODEL, 2)
    assert np.array_equal(srcli.upscale(rgb, loaded, options=RunOptions(tile=0)), by_record)
    with pytest.raises(UsageError, match="scale=4 but the loaded model"):
        srcli.upscale(rgb, loaded, options=RunOptions(scale=4))
    with pytest.raises(UsageError, match="does not compile"):
        srcli.upscale(rgb, options=RunOptions(compile=True))
    with pytest.raises(UsageError, match="--tile"):
        srcli.upscale(rgb, tile=8)
    with pytest.raises(DeviceError, match="fp16 is not supported on the CPU"):
        srcli.upscale(rgb, device="cpu", precision="fp16")


# --------------------------------------------------------------------------- banded assembly (issue 19)


def _set5_lr(shared_dir: Path, name: str, scale: int) -> torch.Tensor:
    """A Set5 image's benchmark LR input (1, 3, h, w): real content, not a flat or random field."""
    return make_lr(modcrop(read_rgb_uint8(shared_dir / "data" / "benchmarks" / "Set5" / name), scale), scale)[None]


def _whole_canvas_merge(
    loaded: LoadedModel, x: torch.Tensor, *, tile: int, overlap: int, batch: int, precision: str
) -> torch.Tensor:
    """The test's own oracle of the tiled merge: every tile's output times its feathered weight (a raised
    cosine over the shared pixels, ``feather_ramp``) summed into one whole-image canvas in the order the tiles
    run, divided by the weight sum at the end; tiles that are not finite in reduced precision are left out and
    run again in fp32 after all others."""
    from srcli.engine.inference import forward_whole

    s = loaded.scale
    _, c, h, w = x.shape
    th, tw = min(tile, h), min(tile, w)
    boxes = [(t, left) for t in spread_starts(h, th, overlap) for left in spread_starts(w, tw, overlap)]
    canvas = torch.zeros(1, c, h * s, w * s)
    weights = torch.zeros(1, 1, h * s, w * s)

    def add(y: torch.Tensor, top: int, left: int) -> None:
        weight = feather_ramp(th * s, overlap * s, top > 0, top + th < h, torch.device("cpu")).view(-1, 1) * (
            feather_ramp(tw * s, overlap * s, left > 0, left + tw < w, torch.device("cpu")).view(1, -1)
        )
        canvas[0, :, top * s : (top + th) * s, left * s : (left + tw) * s] += y * weight
        weights[0, 0, top * s : (top + th) * s, left * s : (left + tw) * s] += weight

    bad = []
    for start in range(0, len(boxes), batch):
        items = boxes[start : start + batch]
        y = forward_whole(loaded, torch.cat([x[..., t : t + th, le : le + tw] for t, le in items]), precision)
        for i, (top, left) in enumerate(items):
            if bool(torch.isfinite(y[i]).all()):
                add(y[i], top, left)
            else:
                bad.append((top, left))
    for top, left in bad:
        add(forward_whole(loaded, x[..., top : top + th, left : left + tw], "fp32")[0], top, left)
    return canvas / weights


@pytest.mark.parametrize(("batch", "precision"), [(1, "fp32"), (3, "fp32"), (5, "fp32"), (2, "bf16")])
@pytest.mark.slow
def test_banded_assembly_gives_the_same_floats_as_a_whole_canvas_merge(
    rlfn: LoadedModel, shared_dir: Path, batch: int, precision: str
) -> None:
    """Every output row comes once, top to bottom, and the rows are a whole-canvas merge's floats bit for bit:
    same tiles, same batches, same feathered weights, same order of summation per pixel. Batches of 3 and 5
    span tile rows; the band buffer then holds more than one tile row, still far less than the image.
    ``tiled_forward`` (what ``upscale_tensor`` returns) gathers the same bands."""
    from srcli.engine.tiling import tiled_forward_bands

    x = _set5_lr(shared_dir, "butterfly.png", 4)[..., :61, :]  # 61 x 64: a short last tile row
    kwargs: dict = dict(tile=24, overlap=6, batch=batch, precision=precision)
    reference = _whole_canvas_merge(rlfn, x, **kwargs)
    bands: list[tuple[int, torch.Tensor]] = []
    done = tiled_forward_bands(rlfn, x, lambda row, band: bands.append((row, band)), **kwargs)
    rows = [row for row, _ in bands]
    assert rows[0] == 0 and len(bands) >= len(spread_starts(61, 24, 6))  # at least one piece per tile row
    assert all(r0 + b.shape[-2] == r1 for (r0, b), r1 in zip(bands, rows[1:], strict=False))
    merged = torch.cat([band for _, band in bands], dim=2)
    assert torch.equal(merged, reference)
    assert (done.tiles, done.refined_tiles) == (len(spread_starts(61, 24, 6)) * len(spread_starts(64, 24, 6)), 0)
    assert done.height == 61 * 4 and done.buffer_rows < done.height
    if batch == 1:
        assert done.buffer_rows == 24 * 4  # one tile row of the output
    gathered = tiled_forward(rlfn, x, **kwargs)
    assert torch.equal(gathered.image, reference) and gathered.tiles == done.tiles


@pytest.mark.slow
def test_upscale_to_array_holds_the_writers_samples(rlfn: LoadedModel, shared_dir: Path) -> None:
    """``upscale_to_array`` keeps the output at the file's bit depth, with the samples the image writer makes
    from ``upscale_tensor``'s float output (clamp, scale, round), for 8 and 16 bits, tiled or whole."""
    from srcli.engine.upscale import upscale_to_array
    from srcli.io.imagefile import quantize

    x = _set5_lr(shared_dir, "bird.png", 4)
    for options in (EngineOptions(tile=32), EngineOptions(tile=0)):
        floats = upscale_tensor(rlfn, x, options).image[0].permute(1, 2, 0).contiguous().numpy()
        for depth in (8, 16):
            array, result = upscale_to_array(rlfn, x, options, bit_depth=depth)
            assert array.dtype == quantize(floats[:1], depth).dtype and array.shape == floats.shape
            assert (array == quantize(floats, depth)).all()
            assert result.banded is (options.tile != 0)
    kept, _ = upscale_to_array(rlfn, x, EngineOptions(tile=32), bit_depth=None)
    floats = upscale_tensor(rlfn, x, EngineOptions(tile=32)).image[0].permute(1, 2, 0).numpy()
    assert kept.dtype.name == "float32" and (kept == floats).all()


@pytest.mark.slow
def test_banded_refines_non_finite_tiles_within_rounding(rlfn: LoadedModel) -> None:
    """A tile that is not finite in bf16 is re-run in fp32 before its band is finished: its pixels sum in
    another order than in a merge that re-runs it after all others, so they agree within float rounding (the
    others exactly)."""
    from srcli.engine.tiling import tiled_forward_bands

    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(1)) * 0.5
    x[..., :8, :8] = 0.9  # only the first tile trips the fault
    flaky = LoadedModel(rlfn.spec, 4, _NanInHalf(rlfn.module), None, None)
    reference = _whole_canvas_merge(flaky, x, tile=32, overlap=8, batch=2, precision="bf16")
    bands: list[torch.Tensor] = []
    done = tiled_forward_bands(flaky, x, lambda _, b: bands.append(b), tile=32, overlap=8, batch=2, precision="bf16")
    merged = torch.cat(bands, dim=2)
    assert done.refined_tiles == 1
    assert torch.allclose(merged, reference, rtol=1e-6, atol=1e-6)
    assert torch.equal(merged[..., 40 * 4 :, :], reference[..., 40 * 4 :, :])  # rows the bad tile misses
