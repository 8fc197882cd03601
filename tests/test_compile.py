"""``torch.compile`` support: whole-network graphs, compiled = eager, and ``srcli upscale --compile``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srcli.archs.asid import ASID
from srcli.archs.rgt import RGT
from srcli.cli import main
from srcli.engine.tiling import tiled_forward
from srcli.engine.upscale import EngineOptions, upscale_tensor
from srcli.hub.loading import LoadedModel
from srcli.registry import get_model


def _tiny_rgt() -> RGT:
    """Two groups of two blocks: an unshifted L-SA, a shifted one and two RG-SA, like the full model's mix."""
    torch.manual_seed(0)
    return RGT(upscale=2, depth=[2, 2], num_heads=[6, 6]).eval()


def _graphs_and_breaks(module: torch.nn.Module, x: torch.Tensor) -> tuple[int, int, list[str]]:
    torch._dynamo.reset()
    with torch.inference_mode():
        ex = torch._dynamo.explain(module)(x)
    return ex.graph_count, ex.graph_break_count, [b.reason for b in ex.break_reasons]


@pytest.mark.parametrize(
    "size",
    [(64, 64), (40, 72)],  # the stored-mask size (64 x 64) and a padded one (border windows re-run)
)
@pytest.mark.slow
def test_rgt_traces_as_one_graph(size: tuple[int, int]) -> None:
    """Caches, window plans and ``unique`` stay outside the trace: no graph break anywhere in the network."""
    graphs, breaks, reasons = _graphs_and_breaks(_tiny_rgt(), torch.rand(1, 3, *size))
    assert (graphs, breaks) == (1, 0), reasons


@pytest.mark.slow
def test_asid_traces_as_one_graph() -> None:
    torch.manual_seed(0)
    graphs, breaks, reasons = _graphs_and_breaks(ASID(scale=2).eval(), torch.rand(1, 3, 24, 40) * 2 - 1)
    assert (graphs, breaks) == (1, 0), reasons


@pytest.mark.parametrize("size", [(64, 64), (40, 72)])
@pytest.mark.slow
def test_rgt_compiled_graph_computes_the_eager_output(size: tuple[int, int]) -> None:
    """The captured graph (AOT-traced, run without code generation) reproduces eager RGT to fp32 rounding,
    shape constants entering as graph inputs; a second input size gets its own constants."""
    model = _tiny_rgt()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", dynamic=False)
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = model(x)
        out = compiled(x)
    assert out.shape == (2, 3, 2 * size[0], 2 * size[1])
    assert float((out - ref).abs().max()) < 1e-5


_REPO = Path(__file__).resolve().parents[1]

# Import RGT and run it eagerly, noting whether the compiler (torch._dynamo) is loaded after each step; the last
# step loads it on purpose, showing that the check sees it.
_EAGER_CHILD = r"""
import json, sys
import torch
steps = {"torch": "torch._dynamo" in sys.modules}
from srcli.archs.rgt import RGT
steps["import"] = "torch._dynamo" in sys.modules
with torch.inference_mode():
    RGT(upscale=2, depth=[2], num_heads=[6]).eval()(torch.rand(1, 3, 16, 16))
steps["eager forward"] = "torch._dynamo" in sys.modules
torch.compiler.disable(lambda: None)
steps["compiler used"] = "torch._dynamo" in sys.modules
print(json.dumps(steps))
"""


@pytest.mark.slow
def test_importing_and_running_rgt_eagerly_does_not_load_the_compiler() -> None:
    """``torch._dynamo`` (~900 modules, ~150 MiB) loads only when something compiles, not with ``srcli.archs.rgt``."""
    env = {**os.environ, "PYTHONPATH": str(_REPO)}
    out = subprocess.run([sys.executable, "-c", _EAGER_CHILD], env=env, check=True, capture_output=True, text=True)
    steps = json.loads(out.stdout.strip().splitlines()[-1])
    assert steps == {"torch": False, "import": False, "eager forward": False, "compiler used": True}


def _recording(loaded: LoadedModel, shapes: list[tuple[int, ...]]) -> LoadedModel:
    class Recorder(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shapes.append(tuple(x.shape))
            return self.inner(x)

    return LoadedModel(loaded.spec, loaded.scale, Recorder(loaded.module), None, None)


def _bicubic() -> LoadedModel:
    spec = get_model("bicubic")
    return LoadedModel(spec, 2, spec.build(2).eval(), None, None)


def test_full_batches_give_every_pass_one_shape_and_the_same_output() -> None:
    """6 and 8 tiles in batches of 3: a short last pass is filled to 3 and its extra outputs dropped."""
    x = torch.rand(1, 3, 50, 100, generator=torch.Generator().manual_seed(2))
    plain_shapes: list[tuple[int, ...]] = []
    full_shapes: list[tuple[int, ...]] = []
    kwargs = {"tile": 32, "overlap": 8, "batch": 3}
    plain = tiled_forward(_recording(_bicubic(), plain_shapes), x[..., :70], **kwargs)
    full = tiled_forward(_recording(_bicubic(), full_shapes), x[..., :70], full_batches=True, **kwargs)
    assert plain.tiles == full.tiles == 6
    assert [s[0] for s in plain_shapes] == [3, 3]
    odd = tiled_forward(_recording(_bicubic(), plain_shapes), x, **kwargs)
    odd_full = tiled_forward(_recording(_bicubic(), full_shapes), x, full_batches=True, **kwargs)
    assert odd.tiles == 8 and [s[0] for s in plain_shapes[-3:]] == [3, 3, 2]
    assert {s for s in full_shapes} == {(3, 3, 32, 32)}
    assert torch.equal(plain.image, full.image) and torch.equal(odd.image, odd_full.image)


def test_full_batches_fill_a_short_batch_of_whole_frames() -> None:
    """Frames in passes of 4: a last group of 2, or of 1, still runs as 4."""
    shapes: list[tuple[int, ...]] = []
    loaded = _recording(_bicubic(), shapes)
    frames = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(3))
    options = EngineOptions(tile=0, batch=4, full_batches=True)
    both = upscale_tensor(loaded, frames, options).image
    one = upscale_tensor(loaded, frames[1:], options).image
    assert [s[0] for s in shapes] == [4, 4]
    plain = upscale_tensor(_bicubic(), frames, EngineOptions(tile=0)).image
    assert torch.equal(both, plain) and torch.equal(one, plain[1:])


@pytest.mark.slow
def test_upscale_compile_flag_writes_what_eager_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--compile`` through the real job (inductor, fp32): same pixels as eager within one grey level."""
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(4)
    for i, (h, w) in enumerate([(40, 52), (36, 60)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(src / f"{i}.png")
    outputs = {}
    for flag in ("", "--compile"):
        out = tmp_path / (flag or "eager").strip("-")
        args = ["upscale", str(src), "-o", str(out), "-m", "survey-net", "-s", "2", "--device", "cpu"]
        args += ["--tile", "24", "--batch", "4", "--precision", "fp32", "--json"] + ([flag] if flag else [])
        torch._dynamo.reset()
        code = main(args)
        report = json.loads(capsys.readouterr().out)
        assert code == 0 and report["done"] == 2
        assert report["compiled"] is bool(flag)
        images = sorted(p for p in out.iterdir() if not p.name.startswith("."))  # not srcli's hidden journal
        outputs[flag] = {p.name: np.asarray(Image.open(p), dtype=np.int16) for p in images}
    assert outputs[""].keys() == outputs["--compile"].keys()
    for name, eager in outputs[""].items():
        assert np.abs(eager - outputs["--compile"][name]).max() <= 1, name


@pytest.mark.slow
def test_evaluate_compiled_tiled_protocol_scores_as_eager(tmp_path: Path) -> None:
    """``evaluate(..., compile=True)`` under a tiled protocol (ASID's regime, here with the embedded
    survey-net weights and 24 px tiles so it stays quick): the same scores as eager, recorded as compiled."""
    from srcli.eval.runner import evaluate
    from srcli.registry import InferenceProtocol

    rng = np.random.default_rng(6)
    yy, xx = np.mgrid[0:64, 0:80]
    for i in range(2):
        smooth = 127 + 100 * np.sin(xx[..., None] / (4 + i) + yy[..., None] / 7 + np.arange(3))
        noisy = np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(tmp_path / f"{i}.png")
    protocol = InferenceProtocol("tiled", tile=24, overlap=8)
    kwargs = {"data_dir": tmp_path, "device": "cpu", "protocol": protocol, "offline": True}
    eager = evaluate("survey-net", None, 2, **kwargs)
    torch._dynamo.reset()
    compiled = evaluate("survey-net", None, 2, compile=True, **kwargs)
    assert compiled.protocol["compiled"] is True and eager.protocol["compiled"] is False
    assert abs(compiled.psnr - eager.psnr) < 1e-3 and abs(compiled.ssim - eager.ssim) < 1e-5
