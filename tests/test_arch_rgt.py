"""RGT / RGT-S: key layout and buffers, conformance goldens, input sizes, precision, caching, strict loading.

Reference facts come from shared/golden (manifests, goldens, probes; README §2-§7) and research/architectures.md §1.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from srcli.archs.rgt import LSA, RGSA, RGT, WindowBranch, recursion_depth, safe_input_size
from srcli.errors import CheckpointMismatchError
from srcli.hub.loading import load_model
from srcli.registry import get_model
from tests.golden_recipe import (
    load_manifest,
    load_recipe_weights,
    parameter_entries,
    recipe_rule,
    recipe_tensor,
    tensor_sha256,
)

VARIANTS = [(v, s) for v in ("rgt", "rgt-s") for s in (2, 3, 4)]


@pytest.fixture(autouse=True)
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _manifest(shared: Path, variant: str, scale: int) -> dict:
    return load_manifest(shared / "golden" / f"{variant}_x{scale}.keys.json")


@functools.cache
def _recipe_model(shared: Path, variant: str, scale: int) -> RGT:
    """The registry's module with the golden recipe weights, in eval mode (built once per session)."""
    module = get_model(variant).build(scale).eval()
    load_recipe_weights(module, _manifest(shared, variant, scale))
    return module


def _with_visible_gamma(module: RGT) -> RGT:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("gamma"):
                p.normal_(0.0, 0.125)  # as the recipe: each block's input visibly reaches the output
    return module.eval()


@functools.cache
def _small_model() -> RGT:
    """RGT-S x2 widths (180 channels, 6 heads, 8x32 windows, 5-wide bias MLP) with 2 groups of 2 blocks:
    group 0 has an unshifted L-SA, group 1 a shifted one, both an RG-SA. Every code path, cheaply."""
    torch.manual_seed(0)
    return _with_visible_gamma(RGT(upscale=2, depth=(2, 2), num_heads=(6, 6)))


@functools.cache
def _narrow_model(groups: int = 2) -> RGT:
    """The same layout at 36 channels and a 16-channel upsampler: for sizes and shapes (cost ~ H*W)."""
    torch.manual_seed(0)
    return _with_visible_gamma(RGT(upscale=2, embed_dim=36, num_feat=16, depth=(2,) * groups, num_heads=(6,) * groups))


def _golden_cases(shared: Path) -> list[dict]:
    index = json.loads((shared / "golden" / "goldens_index.json").read_text())
    return [c for c in index["cases"] if c["variant"].startswith("rgt")]


# --------------------------------------------------------------------------- recipe and key layout


def test_recipe_generator_matches_every_manifest_hash(shared_dir):
    seen: dict[tuple[str, tuple[int, ...]], str] = {}
    for variant, scale in VARIANTS:
        for entry in parameter_entries(_manifest(shared_dir, variant, scale)):
            key = (entry["name"], tuple(entry["shape"]))
            assert recipe_rule(*key) == entry["recipe_rule"], key
            if key not in seen:  # the same name and shape draws the same tensor in every variant
                seen[key] = tensor_sha256(recipe_tensor(*key))
            assert seen[key] == entry["recipe_sha256"], key


@pytest.mark.parametrize(("variant", "scale"), VARIANTS)
@pytest.mark.slow
def test_state_dict_is_the_manifest(shared_dir, variant, scale):
    """Every key, shape, dtype and buffer byte, in state_dict order; parameter count as the registry says."""
    manifest = _manifest(shared_dir, variant, scale)
    module = get_model(variant).build(scale)
    state = module.state_dict()
    ours = [(k, list(t.shape), str(t.dtype).removeprefix("torch.")) for k, t in state.items()]
    theirs = [(e["name"], e["shape"], e["dtype"]) for e in manifest["entries"]]
    assert ours == theirs
    for entry in manifest["entries"]:
        if entry["kind"] == "buffer":
            assert tensor_sha256(state[entry["name"]]) == entry["sha256"], entry["name"]
    buffers = {name for name, _ in module.named_buffers() if name in state}
    assert buffers == {e["name"] for e in manifest["entries"] if e["kind"] == "buffer"}
    n_params = sum(p.numel() for p in module.parameters())
    assert n_params == manifest["parameter_numel"] == get_model(variant).params[scale]


# --------------------------------------------------------------------------- conformance goldens


def test_goldens_cover_both_variants(shared_dir):
    files = {c["file"] for c in _golden_cases(shared_dir)}
    assert len(files) == 7 and any(f.startswith("rgt_x4") for f in files) and any(f.startswith("rgt-s") for f in files)


@pytest.mark.parametrize(
    "case_file",
    [
        "rgt-s_x2__in_16x16.safetensors",  # smallest legal input, recomputed masks at 32x32
        "rgt-s_x2__in_36x100.safetensors",  # recomputed masks at 64x128
        "rgt-s_x2__in_40x56.safetensors",  # padded to 64x64: stored masks, eval T = 2 (train would give 1)
        "rgt-s_x2__in_64x64.safetensors",
        "rgt_x4__in_36x100.safetensors",
        "rgt_x4__in_40x56.safetensors",
        "rgt_x4__in_64x64.safetensors",
    ],
)
@pytest.mark.parametrize("path", ["default", "plain"])
@pytest.mark.filterwarnings("ignore:TF32 acceleration")
@pytest.mark.slow
def test_golden_output(shared_dir, case_file, path):
    """The authors' outputs, on the path fp32 CPU inference takes (oneDNN's fused linear and convolution
    operators, both L-SA branches in one attention call) and on the plain path that training, autocast,
    GPUs and ``torch.compile`` take (here forced by turning oneDNN off)."""
    case = next(c for c in _golden_cases(shared_dir) if c["file"] == case_file)
    tensors = load_file(str(shared_dir / "golden" / case_file))
    module = _recipe_model(shared_dir, case["variant"], case["scale"])
    with torch.inference_mode(), torch.backends.mkldnn.flags(enabled=path == "default"):
        out = module(tensors["input"])
    assert list(out.shape) == case["output_shape"]
    diff = (out - tensors["output"]).abs()
    tol = case["suggested_tolerance"]
    assert diff.max().item() <= tol["max_abs"], diff.max().item()
    assert diff.mean().item() <= tol["mean_abs"], diff.mean().item()


# --------------------------------------------------------------------------- input sizes


@pytest.mark.parametrize(
    ("h", "w", "training", "depth"),
    [
        # research/architectures.md §1.4.4: eval T = max(log4(H//16), log4(W//16), 2); train over //4, no floor.
        (64, 64, False, 2),
        (64, 64, True, 2),
        (40, 56, False, 2),
        (40, 56, True, 1),
        (255, 40, False, 2),
        (1023, 16, False, 2),
        (16, 1024, False, 3),
        (70, 1030, False, 3),
        (4096, 300, False, 4),
    ],
)
def test_recursion_depth_follows_the_reference_rules(h, w, training, depth):
    assert recursion_depth(h, w, training) == depth


def test_only_sizes_the_reference_rejects_are_padded(shared_dir):
    probes = json.loads((shared_dir / "golden" / "input_size_probes.json").read_text())["probes"]
    for probe in (p for p in probes if p["variant"].startswith("rgt")):
        h, w = probe["input_hw"]
        padded = safe_input_size(h, w)
        assert (padded != (h, w)) == (probe["outcome"] == "error"), probe
    # architectures.md §1.4.5: these work upstream, so they are left as they are.
    for size in [(16, 16), (37, 50), (16, 300), (70, 1030), (64, 64)]:
        assert safe_input_size(*size) == size
    assert safe_input_size(5, 7) == (16, 16)
    assert safe_input_size(20, 1100) == (64, 1100)  # T = 3 needs a short side of 4**3


def _count_reductions(module: RGT, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    rgsa = next(m for m in module.modules() if isinstance(m, RGSA))
    calls: list[tuple[int, ...]] = []
    hook = rgsa.reduction1.register_forward_hook(lambda _m, _i, out: calls.append(tuple(out.shape[-2:])))
    try:
        with torch.inference_mode():
            y = module(x)
    finally:
        hook.remove()
    return y, len(calls)


@pytest.mark.parametrize(
    ("h", "w", "depth"),
    [(16, 16, 2), (37, 50, 2), (70, 70, 2), (70, 1030, 3), (5, 7, 2), (15, 40, 2), (16, 300, 2), (20, 1100, 3)],
)
def test_any_input_size_gives_the_scaled_output(h, w, depth):
    """Odd sizes, the probes' failures (15x40, 20x1100) and a 5x7 input: output s*H x s*W, RG-SA depth as the
    (padded) size says; depth counted on the first RG-SA block (one call of ``reduction1`` per level)."""
    module = _narrow_model(groups=1)
    y, calls = _count_reductions(module, torch.rand(1, 3, h, w))
    assert y.shape == (1, 3, 2 * h, 2 * w)
    assert torch.isfinite(y).all()
    assert calls == depth


def test_training_mode_uses_the_training_recursion_depth():
    module = _narrow_model(groups=1)
    module.train()
    try:
        _, calls = _count_reductions(module, torch.rand(1, 3, 40, 56))
    finally:
        module.eval()
    assert calls == 1


def test_batch_matches_single_images():
    """Batched windows, masks and index plans: 40x56 (stored masks, windows in the padding dropped),
    70x70 (recomputed masks on the border windows)."""
    module = _narrow_model()
    for h, w in [(40, 56), (70, 70)]:
        x = torch.rand(2, 3, h, w)
        with torch.inference_mode():
            both = module(x)
            single = torch.cat([module(x[:1]), module(x[1:])])
        assert (both - single).abs().max().item() < 1e-5


# --------------------------------------------------------------------------- precision


def test_bf16_autocast_agrees_with_fp32():
    """bf16 keeps 8 significant bits (one ulp at 1.0 is 2^-8 = 3.9e-3). Outputs here are O(1): allow one ulp
    on average and 8 at worst. A mask or bias lost or mis-cast in bf16 moves outputs by ~0.1-1 (README §5)."""
    module = _small_model()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = module(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = module(x)
    diff = (low.float() - ref).abs()
    assert diff.mean().item() < 2**-8
    assert diff.max().item() < 8 * 2**-8


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("hw", [(40, 40), (70, 70)])
@pytest.mark.slow
def test_pure_half_precision_runs(dtype, hw):
    """``model.half()`` / ``.bfloat16()`` crash upstream at sizes with recomputed masks (70x70 pads to 96x96);
    40x40 uses the stored fp32 masks. Here both run, in the model's dtype, close to fp32."""
    module = _narrow_model()
    low = RGT(upscale=2, embed_dim=36, num_feat=16, depth=(2, 2), num_heads=(6, 6)).eval()
    low.load_state_dict(module.state_dict())
    low.to(dtype)
    x = torch.rand(1, 3, *hw)
    with torch.inference_mode():
        ref = module(x)
        y = low(x.to(dtype))
    assert y.dtype == dtype and y.shape == ref.shape
    assert torch.isfinite(y).all()
    assert (y.float() - ref).abs().max().item() < 0.1


# --------------------------------------------------------------------------- caching


def test_position_bias_cache_is_reused_and_invalidated():
    module = _small_model()
    branch = next(m for m in module.modules() if isinstance(m, WindowBranch))
    cpu = torch.device("cpu")
    with torch.inference_mode():
        first = branch.position_bias(cpu, torch.float32)
        assert branch.position_bias(cpu, torch.float32) is first
        y0 = module(torch.zeros(1, 3, 16, 16))
    with torch.no_grad():
        assert branch.position_bias(cpu, torch.float32) is first  # usable outside inference mode too
        branch.pos.pos3[2].bias.add_(1.0)  # an in-place weight update must invalidate the table
    try:
        with torch.inference_mode():
            second = branch.position_bias(cpu, torch.float32)
            assert second is not first
            assert torch.allclose(second, first + 1.0, atol=1e-6)
            assert not torch.equal(module(torch.zeros(1, 3, 16, 16)), y0)
        module.train()
        assert not branch._cache  # switching mode drops the tables
    finally:
        with torch.no_grad():
            branch.pos.pos3[2].bias.sub_(1.0)
        module.eval()


@pytest.mark.slow
def test_stored_mask_bias_is_cached_and_follows_the_mask_buffer():
    """At the stored masks' size (64 x 64) the bias-plus-mask table is built once, reused, and rebuilt when
    the mask buffer changes in place (a checkpoint loaded over it); outputs match a fresh module's."""
    module = _small_model()
    lsa = next(m for m in module.modules() if isinstance(m, LSA) and m.shift)
    branch = lsa.attns[0]
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        y0 = module(x)
        first = lsa.constants(64, 64, x.device, torch.float32)[0].bias
        assert first.dim() == 4 and lsa.constants(64, 64, x.device, torch.float32)[0].bias is first
        assert torch.equal(module(x), y0)
    mask = lsa.attn_mask_0
    original = mask.clone()
    with torch.no_grad():
        mask[0, :, :128] = -100.0  # window 0's queries no longer see its first 128 keys
    try:
        with torch.inference_mode():
            second = lsa.constants(64, 64, x.device, torch.float32)[0].bias
            assert second is not first
            expected = branch.position_bias(x.device, torch.float32).clone()
            expected[:, :, :128] -= 100.0
            assert torch.allclose(second[0], expected)
            assert (module(x) - y0).abs().max() > 1e-3
    finally:
        with torch.no_grad():
            mask.copy_(original)
    with torch.inference_mode():
        assert (module(x) - y0).abs().max() < 1e-5  # rebuilt from the restored buffer


def test_gradients_reach_the_position_bias_mlp():
    """In training (and in eval with autograd on) the bias is recomputed, so the MLP gets gradients."""
    module = RGT(upscale=2, depth=(2,), num_heads=(6,))
    module.train()
    module(torch.rand(1, 3, 40, 40)).mean().backward()
    grad = module.layers[0].blocks[0].attn.attns[0].pos.pos_proj.weight.grad
    assert grad is not None and grad.abs().sum().item() > 0
    module.eval()
    with torch.inference_mode():
        module(torch.rand(1, 3, 16, 16))  # fills the caches
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    module(x).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.slow
def test_authors_layout_checkpoint_loads_strictly(shared_dir, tmp_path, cache):
    """A ``{'params': state_dict}`` file (BasicSR's layout, buffers included) loads with no renaming and
    reproduces the golden; a file missing a mask buffer is refused."""
    module = _recipe_model(shared_dir, "rgt-s", 2)
    path = tmp_path / "RGT_S_x2.pth"
    torch.save({"params": module.state_dict()}, path)
    loaded = load_model("rgt-s", 2, weights=path, offline=True)
    tensors = load_file(str(shared_dir / "golden" / "rgt-s_x2__in_16x16.safetensors"))
    with torch.inference_mode():
        out = loaded.module(tensors["input"])
    assert (out - tensors["output"]).abs().max().item() <= 5e-5

    broken = {k: v for k, v in module.state_dict().items() if k != "layers.1.blocks.0.attn.attn_mask_0"}
    torch.save({"params": broken}, path)
    with pytest.raises(CheckpointMismatchError, match="attn_mask_0"):
        load_model("rgt-s", 2, weights=path, offline=True)
