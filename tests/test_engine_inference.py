"""The inference engine: value ranges, padding, tiled averaging and self-ensemble."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from srcli.engine.inference import _pad_to, _starts, forward_tiled_average, forward_whole, pick_device, run_model
from srcli.hub.loading import LoadedModel, load_model
from srcli.registry import RANGE_255, RANGE_PM1, InferenceProtocol, get_model


class _Nearest(nn.Module):
    """A pointwise "SR model": nearest upsampling; tiling can change nothing about its output."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        return torch.repeat_interleave(torch.repeat_interleave(x, self.scale, -1), self.scale, -2)


def _loaded(scale: int = 2, **spec_changes) -> LoadedModel:
    spec = replace(get_model("bicubic"), **spec_changes)
    return LoadedModel(spec=spec, scale=scale, module=_Nearest(scale), weights_path=None, weights_sha256=None)


def test_tile_origins_cover_the_image_and_end_at_the_border():
    assert _starts(50, 64, 24) == [0]
    assert _starts(100, 64, 24) == [0, 36]
    assert _starts(200, 64, 24) == [0, 40, 80, 120, 136]


def test_tiled_average_equals_whole_for_a_pointwise_model():
    x = torch.rand(1, 3, 150, 97)
    loaded = _loaded()
    whole = forward_whole(loaded, x)
    tiled = forward_tiled_average(loaded, x, tile=64, overlap=24)
    assert tiled.shape == (1, 3, 300, 194)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-6)
    assert max(t.shape[-1] for t in loaded.module.seen[1:]) == 64


@pytest.mark.parametrize("value_range", [RANGE_255, RANGE_PM1])
def test_value_range_is_converted_both_ways(value_range):
    loaded = _loaded(value_range=value_range)
    x = torch.rand(1, 3, 8, 8)
    y = forward_whole(loaded, x)
    lo, hi = value_range
    seen = loaded.module.seen[0]
    assert seen.min() >= lo and seen.max() <= hi and seen.max() > (hi + lo) / 2 - 1e-6
    torch.testing.assert_close(y[..., ::2, ::2], x)


def test_padding_to_multiple_and_min_size_is_cropped_away():
    loaded = _loaded(scale=3, pad_multiple=8, min_size=15)
    x = torch.rand(1, 3, 5, 13)
    y = forward_whole(loaded, x)
    assert loaded.module.seen[0].shape[-2:] == (16, 16)
    assert y.shape[-2:] == (15, 39)
    torch.testing.assert_close(y[..., ::3, ::3], x)
    assert _pad_to(torch.rand(1, 3, 2, 2), 1, 9).shape[-2:] == (9, 9)  # smaller than the pad: replicate


def test_self_ensemble_inverts_each_transform():
    x = torch.rand(1, 3, 20, 31)
    loaded = _loaded()
    torch.testing.assert_close(run_model(loaded, x, self_ensemble=True), forward_whole(loaded, x))
    assert len(loaded.module.seen) == 9
    assert {t.shape[-2:] for t in loaded.module.seen} == {(20, 31), (31, 20)}


def test_registry_protocol_drives_tiling():
    loaded = _loaded(protocol=InferenceProtocol("tiled", tile=16, overlap=4))
    run_model(loaded, torch.rand(1, 3, 40, 40))
    assert len(loaded.module.seen) == 9  # 3 x 3 tiles of 16 px


def test_bicubic_model_is_flip_equivariant_so_ensemble_changes_nothing():
    loaded = load_model("bicubic", 2, offline=True)
    x = torch.rand(1, 3, 24, 17, dtype=torch.float32)
    torch.testing.assert_close(run_model(loaded, x, self_ensemble=True), run_model(loaded, x), atol=1e-5, rtol=0)


def test_reduced_precision_stays_close(shared_dir):
    loaded = load_model("imdn", 2, weights=shared_dir / "weights" / "IMDN_x2.pth", offline=True)
    x = torch.rand(1, 3, 32, 32)
    ref = run_model(loaded, x)
    low = run_model(loaded, x, precision="bf16")
    assert low.dtype == torch.float32 and (low - ref).abs().max() < 0.05


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_device_prefers_cuda_then_mps_then_cpu(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool, expected: str
) -> None:
    """``auto`` takes the first available of CUDA, MPS and the CPU (availability simulated, so every branch
    runs on any machine); an explicit ``cpu`` is used as is whatever is available."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr("srcli.engine.devices._mps_available", lambda: mps)
    assert pick_device("auto") == torch.device(expected)
    assert pick_device("cpu") == torch.device("cpu")
