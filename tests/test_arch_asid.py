"""ASID / ASID-D8: key layout, conformance goldens, sizes, the tiled protocol, attention sharing, precision."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import srcli.archs.asid as asid_mod
from srcli.archs.asid import ASID, ChannelAttention, LayerNorm2d
from srcli.engine.inference import run_model
from srcli.errors import CheckpointMismatchError
from srcli.hub.checkpoint import load_strict
from srcli.hub.loading import LoadedModel, load_model
from srcli.registry import InferenceProtocol, get_model
from tests.golden_recipe import load_manifest, load_recipe_weights, recipe_state_dict
from tests.test_eval_cli import run

#: The paper's parameter counts (298K / 304K / 313K, 732K / 739K / 748K), exact as in architectures.md §2.1.
PARAMS = {
    ("asid", 2): 297_516,
    ("asid", 3): 304_011,
    ("asid", 4): 313_104,
    ("asid-d8", 2): 732_146,
    ("asid-d8", 3): 738_641,
    ("asid-d8", 4): 747_734,
}
VARIANTS = list(PARAMS)


def _manifest(shared: Path, variant: str, scale: int) -> dict:
    return load_manifest(shared / "golden" / f"{variant}_x{scale}.keys.json")


@functools.cache
def _recipe_model(shared: Path, variant: str, scale: int) -> ASID:
    """The registry's module with the golden recipe weights, in eval mode (built once per session)."""
    module = get_model(variant).build(scale).eval()
    load_recipe_weights(module, _manifest(shared, variant, scale))
    return module


def _golden_cases(shared: Path) -> list[dict]:
    index = json.loads((shared / "golden" / "goldens_index.json").read_text())
    return [c for c in index["cases"] if c["variant"].startswith("asid")]


# --------------------------------------------------------------------------- key layout


@pytest.mark.parametrize(("variant", "scale"), VARIANTS)
def test_state_dict_is_the_manifest(shared_dir, variant, scale):
    manifest = _manifest(shared_dir, variant, scale)
    module = get_model(variant).build(scale)
    ours = [(k, list(t.shape), str(t.dtype).removeprefix("torch.")) for k, t in module.state_dict().items()]
    assert ours == [(e["name"], e["shape"], e["dtype"]) for e in manifest["entries"]]  # names, shapes, order
    params = sum(p.numel() for p in module.parameters())
    assert params == manifest["parameter_numel"] == get_model(variant).params[scale] == PARAMS[variant, scale]
    # The only buffers are the non-persistent position indices, exactly where the manifest says.
    buffers = sorted(n for n, _ in module.named_buffers())
    assert buffers == sorted(manifest["non_persistent_buffers_not_in_state_dict"])


def test_only_block0_has_query_key_and_position_bias():
    module = get_model("asid-d8").build(2)
    keys = list(module.state_dict())
    assert sum(k.startswith("block0.residual_layer.0.") for k in keys) == 124 - 12  # body: all but res_end + ESA
    assert not any(k.startswith("block1.residual_layer.0.") for k in keys)
    for k in keys:
        if "to_qkv" in k or "rel_pos_bias" in k:
            assert k.startswith("block0.residual_layer.0.S")
        if "to_v" in k:
            assert not k.startswith("block0.")


# --------------------------------------------------------------------------- numerics


GOLDENS = [
    "asid_x2__in_37x50",  # zero-padded to 40x56 inside, cropped
    "asid_x2__in_64x64",
    "asid_x2__in_9x9",  # the smallest size upstream accepts (padded to 16x16)
    "asid-d8_x4__in_37x50",  # 8 blocks sharing block 0's maps
    "asid-d8_x4__in_64x64",
]


def test_every_asid_golden_is_tested(shared_dir):
    assert {c["file"] for c in _golden_cases(shared_dir)} == {f"{g}.safetensors" for g in GOLDENS}


@pytest.mark.parametrize("golden", GOLDENS)
@pytest.mark.slow
def test_golden_through_the_module(shared_dir, golden):
    from safetensors.torch import load_file

    (case,) = [c for c in _golden_cases(shared_dir) if c["file"] == f"{golden}.safetensors"]
    data = load_file(str(shared_dir / "golden" / case["file"]))
    with torch.inference_mode():
        y = _recipe_model(shared_dir, case["variant"], case["scale"])(data["input"])
    assert y.shape == data["output"].shape
    diff = (y - data["output"]).abs()
    tol = case["suggested_tolerance"]  # the README's per-family fp32 CPU tolerance
    assert diff.max() <= tol["max_abs"] and diff.mean() <= tol["mean_abs"], (diff.max(), diff.mean())


def _loaded_recipe(shared: Path, variant: str, scale: int) -> LoadedModel:
    return LoadedModel(get_model(variant), scale, _recipe_model(shared, variant, scale), None, None)


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("hw", [(1, 1), (3, 5), (8, 8)])
@pytest.mark.slow
def test_tiny_inputs_are_zero_padded_to_16_inside(shared_dir, hw):
    """Upstream raises at <= 8 px; here such sides are zero-padded to 16 and cropped, transparently."""
    model = _recipe_model(shared_dir, "asid", 2)
    x = torch.rand(1, 3, *hw) * 2 - 1
    padded = F.pad(x, (0, 16 - hw[1], 0, 16 - hw[0]))  # zeros right and bottom
    with torch.inference_mode():
        y = model(x)
        reference = model(padded)[..., : 2 * hw[0], : 2 * hw[1]]
    assert y.shape == (1, 3, 2 * hw[0], 2 * hw[1])
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, reference, rtol=0, atol=1e-5)


def test_padding_rule():
    assert [asid_mod.padded_side(n) for n in (1, 8, 9, 16, 17, 37, 50, 64)] == [16, 16, 16, 16, 24, 40, 56, 64]


# --------------------------------------------------------------------------- tiled protocol


@pytest.mark.slow
def test_registry_protocol_is_the_authors_tiling(shared_dir, tmp_path):
    """run_model with the registry protocol averages 64 px tiles overlapping by 24, each through the model."""
    from safetensors.torch import save_file

    spec = get_model("asid")
    assert spec.protocol == InferenceProtocol("tiled", tile=64, overlap=24)
    # Through the real loading path: a raw state dict file, strict load.
    path = tmp_path / "asid_x2.safetensors"
    save_file(recipe_state_dict(_manifest(shared_dir, "asid", 2)), str(path))
    loaded = load_model("asid", 2, weights=path, offline=True)
    x = torch.rand(1, 3, 48, 110, generator=torch.Generator().manual_seed(1))
    tiled = run_model(loaded, x)
    assert tiled.shape == (1, 3, 96, 220)

    # Independent reference: square tiles of min(64, 48, 110) = 48 px at columns 0, 40 and 110 - 48 = 62
    # (stride 64 - 24 = 40, then one flush with the border), averaged where they overlap. The procedural
    # weights make the network chaotic (tiled and whole-image outputs differ by about the output's own
    # spread), so this pins the tiling down.
    model = loaded.module
    canvas = torch.zeros_like(tiled)
    count = torch.zeros_like(tiled)
    with torch.inference_mode():
        for left in (0, 40, 62):
            canvas[..., 2 * left : 2 * (left + 48)] += (model(x[..., left : left + 48] * 2 - 1) + 1) / 2
            count[..., 2 * left : 2 * (left + 48)] += 1
        whole = (model(x * 2 - 1) + 1) / 2
    torch.testing.assert_close(tiled, canvas / count, rtol=0, atol=1e-5)
    assert (tiled - whole).abs().mean() > 1e-2


@pytest.mark.slow
def test_tiled_protocol_reproduces_the_64px_golden(shared_dir):
    """A 64x64 input is a single tile, so the whole-image golden is also the tiled protocol's answer."""
    from safetensors.torch import load_file

    data = load_file(str(shared_dir / "golden" / "asid_x2__in_64x64.safetensors"))
    y = run_model(_loaded_recipe(shared_dir, "asid", 2), (data["input"] + 1) / 2)
    assert (y * 2 - 1 - data["output"]).abs().max() <= 1e-4


# --------------------------------------------------------------------------- attention sharing


class _CountSimilarityMatmuls(TorchFunctionMode):
    """Counts matrix products whose result ends in (64, 64): token-token similarity of 8x8 windows."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        names = {"matmul", "__matmul__", "bmm", "baddbmm", "einsum"}
        if getattr(func, "__name__", "") in names and isinstance(out, torch.Tensor) and out.shape[-2:] == (64, 64):
            self.count += 1
        return out


@pytest.mark.parametrize("variant", ["asid", "asid-d8"])
@pytest.mark.slow
def test_blocks_after_the_first_skip_the_similarity(variant, monkeypatch):
    calls = []
    original = asid_mod.similarity
    monkeypatch.setattr(asid_mod, "similarity", lambda q, k: calls.append(q.shape) or original(q, k))
    model = get_model(variant).build(2).eval()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.inference_mode(), _CountSimilarityMatmuls() as mode:
        model(x)
    # One map per SLA / SGA of block 0, whatever the depth (3 or 8 blocks would be 18 or 48 without sharing).
    assert len(calls) == 6
    assert mode.count == 6
    assert all(shape[-2] == 64 for shape in calls)


def test_the_shared_maps_drive_the_later_blocks(shared_dir, monkeypatch):
    """Replacing the maps handed to blocks 1+ by uniform attention changes the output."""
    model = _recipe_model(shared_dir, "asid", 2)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.inference_mode():
        reference = model(x)
    original = asid_mod.SharingIDB.forward
    monkeypatch.setattr(
        asid_mod.SharingIDB,
        "forward",
        lambda self, t, maps: original(self, t, [torch.full_like(m, 1 / 64) for m in maps]),
    )
    with torch.inference_mode():
        changed = model(x)
    assert (changed - reference).abs().max() > 0.01


# --------------------------------------------------------------------------- precision


def test_layernorm2d_is_computed_in_fp32_for_half_inputs():
    norm = LayerNorm2d(48).half()
    x = (torch.randn(1, 48, 4, 4) * 300 + 1000).half()  # (x - mean)^2 overflows fp16
    y = norm(x)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    reference = F.layer_norm(x.double().permute(0, 2, 3, 1), (48,), eps=1e-6).permute(0, 3, 1, 2)
    assert (y.double() - reference).abs().max() < 1e-2


def test_channel_attention_survives_zero_features_in_half():
    """An all-zero query is 0/0 in fp16 (eps 1e-12 rounds to 0); the fp32 normalisation keeps it finite."""
    for grid in (False, True):
        attn = ChannelAttention(48, grid=grid).half()
        y = attn(torch.zeros(1, 48, 16, 16, dtype=torch.float16))
        assert torch.isfinite(y).all()


@pytest.mark.slow
def test_bf16_autocast_stays_close_to_fp32(shared_dir):
    model = _recipe_model(shared_dir, "asid", 2)
    x = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.inference_mode():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert torch.isfinite(low).all()
    # bf16 keeps 8 bits of mantissa: a few percent of the output's spread, not more.
    assert (low.float() - ref).abs().mean() < 0.05 * ref.std()


# --------------------------------------------------------------------------- loading and mismatch report


def test_mismatched_checkpoint_names_keys_and_shapes(shared_dir):
    spec = get_model("asid")
    state = recipe_state_dict(_manifest(shared_dir, "asid", 3))  # an x3 file ...
    state["block1.residual_layer.0.pw1.weight"] = state.pop("block1.residual_layer.pw1.weight")  # ... one key renamed
    with pytest.raises(CheckpointMismatchError) as info:
        load_strict(spec.build(4), state, "epoch0_ASID.pth", ignore_keys=spec.ignore_keys)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert "epoch0_ASID.pth does not fit ASID" in message
    assert "1 missing: block1.residual_layer.pw1.weight" in message
    assert "1 unexpected: block1.residual_layer.0.pw1.weight" in message
    assert "up.0.weight (file (27, 48, 3, 3) vs model (48, 48, 3, 3))" in message
    assert "up.0.bias (file (27,) vs model (48,))" in message


def test_checkpoint_with_position_indices_loads(shared_dir):
    """A file that (against upstream's habit) saved the non-persistent indices still loads strictly."""
    spec = get_model("asid")
    state = recipe_state_dict(_manifest(shared_dir, "asid", 2))
    state["block0.residual_layer.0.SLA1.attn.rel_pos_indices"] = torch.zeros(64, 64, dtype=torch.long)
    module = spec.build(2)
    load_strict(module, state, "f.pth", ignore_keys=spec.ignore_keys)
    assert module.block0.residual_layer[0].SLA1.attn.rel_pos_indices.max() == 224  # the module's own, not the file's


# --------------------------------------------------------------------------- srcli eval --table


@pytest.mark.slow
def test_eval_table_lists_every_row_and_runs_what_it_can(shared_mirror):
    from srcli.eval.datasets import dataset_files
    from srcli.hub.loading import resolve_weights

    # Fill the cache from the local mirror, then run offline: ASID weights are not mirrored.
    dataset_files("set5")
    resolve_weights(get_model("imdn"), 4)
    out = run("eval", "--table", "asid-table1", "-d", "set5", "-s", "4", "--offline")
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if "Set5" in line}
    ours = {"asid", "asid-d8", "imdn"}
    others = {"RFDN", "SPIN", "ELAN", "DRSAN", "ESRT", "LatticeNet", "Omni-SR", "MAFFSRN", "SwinIR"}
    assert set(lines) == ours | others  # every x4 row of ASID Table 1
    assert "32.20" in lines["imdn"] and "32.21/0.8948" in lines["imdn"]  # ours, next to ASID Table 1's value
    assert "weights not available" in lines["asid"] and "32.39/0.8964" in lines["asid"]
    assert "weights not available" in lines["asid-d8"] and "32.57/0.8990" in lines["asid-d8"]
    assert "not in srcli" in lines["SwinIR"]
    assert "asid x4: weights not available" in out.stderr
