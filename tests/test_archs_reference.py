"""Official IMDN / RLFN checkpoints load strictly into our modules and produce sane SR output."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srcli.archs.imdn import IMDN
from srcli.archs.rlfn import MIN_INPUT_SIZE, RLFN


@dataclass(frozen=True)
class Ref:
    file: str
    arch: type[torch.nn.Module]
    scale: int
    input_255: bool  # RLFN weights were trained on [0, 255], IMDN on [0, 1]
    kwargs: dict = field(default_factory=dict)


REFS = [
    Ref("IMDN_x2.pth", IMDN, 2, False),
    Ref("IMDN_x3.pth", IMDN, 3, False),
    Ref("IMDN_x4.pth", IMDN, 4, False),
    Ref("rlfn_x2.pth", RLFN, 2, True),
    Ref("rlfn_x4.pth", RLFN, 4, True),
    Ref("rlfn_s_x2.pth", RLFN, 2, True, {"num_features": 48}),
    Ref("rlfn_s_x4.pth", RLFN, 4, True, {"num_features": 48}),
]


def _load_model(shared: Path, ref: Ref) -> torch.nn.Module:
    state = torch.load(shared / "weights" / ref.file, map_location="cpu", weights_only=True)
    # IMDN checkpoints were saved from DataParallel: every key starts with "module.".
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = ref.arch(scale=ref.scale, **ref.kwargs).eval()
    model.load_state_dict(state, strict=True)
    return model


def _psnr_y(a: np.ndarray, b: np.ndarray, crop: int) -> float:
    """PSNR on the BT.601 Y channel of two HxWx3 [0, 255] images, ``crop`` pixels shaved per side."""
    coeffs = np.array([65.481, 128.553, 24.966]) / 255
    diff = (a - b) @ coeffs  # the +16 offset of Y cancels in the difference
    diff = diff[crop:-crop, crop:-crop]
    return float(10 * np.log10(255.0**2 / np.mean(diff**2)))


@pytest.mark.parametrize("ref", REFS, ids=lambda r: r.file)
@pytest.mark.slow
def test_checkpoint_loads_and_upscales(shared_dir: Path, ref: Ref) -> None:
    model = _load_model(shared_dir, ref)
    x = torch.rand(2, 3, 17, 23) * (255 if ref.input_255 else 1)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 3, 17 * ref.scale, 23 * ref.scale)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("ref", REFS, ids=lambda r: r.file)
@pytest.mark.slow
def test_beats_bicubic_on_real_image(shared_dir: Path, ref: Ref) -> None:
    s = ref.scale
    hr = Image.open(shared_dir / "data" / "benchmarks" / "Set5" / "butterfly.png").convert("RGB")
    hr = hr.crop((0, 0, hr.width - hr.width % s, hr.height - hr.height % s))
    lr = hr.resize((hr.width // s, hr.height // s), Image.BICUBIC)
    hr_arr = np.asarray(hr, dtype=np.float64)
    bicubic = np.asarray(lr.resize(hr.size, Image.BICUBIC), dtype=np.float64)

    model = _load_model(shared_dir, ref)
    x = torch.from_numpy(np.asarray(lr, dtype=np.float32)).permute(2, 0, 1)[None]
    range_max = 255.0 if ref.input_255 else 1.0
    with torch.no_grad():
        sr = model(x * (range_max / 255))[0].permute(1, 2, 0).numpy()
    sr = np.round(np.clip(sr.astype(np.float64) / range_max * 255, 0, 255))

    psnr = _psnr_y(sr, hr_arr, s)
    # A coarse wiring check; the exact numbers are asserted against the published tables in
    # tests/test_eval_reproduces_papers.py.
    assert psnr > _psnr_y(bicubic, hr_arr, s) + 1.0


def test_rlfn_rejects_too_small_input() -> None:
    model = RLFN(scale=2).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, MIN_INPUT_SIZE, MIN_INPUT_SIZE)).shape[-1] == 2 * MIN_INPUT_SIZE
        with pytest.raises(ValueError, match="at least"):
            model(torch.rand(1, 3, MIN_INPUT_SIZE - 1, 32))
