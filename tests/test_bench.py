"""``srcli bench`` and ``srcli.engine.bench``: the fields, the FLOP count, the tiled modes, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from srcli.cli.bench import parse_size
from srcli.engine.bench import bench_model, build_model, count_flops, peak_tflops
from srcli.engine.inference import forward_tiled_average, optimise_for_inference
from srcli.engine.tiling import spread_starts


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: thread barriers cost more than they save, badly so on a busy machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_whole_image_fields_are_consistent():
    r = bench_model("imdn", 4, size=(6, 10), device="cpu", precision="fp32", batch=2, warmup=1, iters=3)
    assert (r.model, r.scale, r.mode, r.precision, r.input_size, r.batch, r.tiles) == (
        "imdn",
        4,
        "whole",
        "fp32",
        (6, 10),
        2,
        1,
    )
    assert r.output_megapixels == pytest.approx(2 * 6 * 10 * 16 / 1e6)
    assert r.timed_runs == 3 and r.latency_min_ms <= r.latency_ms
    assert r.mp_per_s == pytest.approx(r.output_megapixels / (r.latency_ms / 1e3))
    assert r.tflops == pytest.approx(r.flops / (r.latency_ms / 1e3) / 1e12)
    assert r.params == 715_176  # IMDN x4's published parameter count
    # No peak table and no allocator statistics on the CPU; the engine runs the CNNs NHWC.
    # On a CPU the "peak" is the matrix-product rate measured in the same call, in the run's precision.
    assert r.peak_memory_mb is None and r.cpu is not None
    assert r.peak_tflops == pytest.approx(r.cpu["fp32_gflops"] / 1000)
    assert r.peak_fraction == pytest.approx(r.tflops / r.peak_tflops)
    assert isinstance(r.cpu["features"]["native_bf16"], bool)
    assert r.channels_last is True and r.compiled is False and r.finite
    record = json.loads(json.dumps(r.to_dict()))
    assert record["gflops_per_output_mp"] == pytest.approx(r.flops / 1e9 / r.output_megapixels)


def _conv_flops_by_hooks(module: nn.Module, x: torch.Tensor) -> int:
    """2 x multiply-adds of every Conv2d, from the output shapes the layers actually produce."""
    total = 0

    def hook(layer: nn.Conv2d, _inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = layer.kernel_size
        total += 2 * out.numel() * (layer.in_channels // layer.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return total


def test_imdn_flops_are_its_convolutions():
    loaded = build_model("imdn", 4, torch.device("cpu"))
    x = torch.rand(1, 3, 16, 24)
    with torch.inference_mode():
        counted = count_flops(lambda: loaded.module(x))
    assert counted == _conv_flops_by_hooks(loaded.module, x)
    # One layer by hand: the 3 -> 64 3x3 head costs 2 * 16 * 24 * 64 * 3 * 9 FLOPs, a small share of the total.
    head = 2 * 16 * 24 * 64 * 3 * 9
    assert 0 < head < counted / 10
    # IMDN x4: 40.9 G multiply-adds for a 1280 x 720 output (the paper's table), i.e. ~88.8 GFLOP per output MP.
    per_mp = counted / 1e9 / (16 * 24 * 16 / 1e6)
    assert per_mp == pytest.approx(2 * 40.9 / (1280 * 720 / 1e6), rel=0.03)


def test_attention_on_the_cpu_is_counted():
    class Attn(nn.Module):
        def forward(self, q: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, q, q)

    b, h, s, d = 2, 3, 64, 16
    q = torch.rand(b, h, s, d)
    with torch.inference_mode():
        assert count_flops(lambda: Attn()(q)) == 2 * (2 * b * h * s * s * d)


@pytest.mark.slow
def test_tiled_and_protocol_modes_count_tiles_and_output():
    r = bench_model("imdn", 2, size=(40, 30), device="cpu", tile=16, overlap=4, batch=4, warmup=0, iters=1)
    assert r.mode == "tiled" and r.tile == 16 and r.overlap == 4
    assert r.tiles == len(spread_starts(40, 16, 4)) * len(spread_starts(30, 16, 4))
    assert r.output_megapixels == pytest.approx(40 * 30 * 4 / 1e6)
    # ASID's protocol comes from the registry: 64 px tiles, 24 overlap.
    asid = build_model("asid", 2, torch.device("cpu"))
    common = dict(size=(70, 64), device="cpu", warmup=0, iters=1, loaded=asid)
    p = bench_model("asid", 2, mode="protocol", batch=2, **common)
    # 64 px tiles at origins 0 and 6 down a 70 px side, one across 64 px (the authors' loop).
    assert (p.tile, p.overlap, p.tiles) == (64, 24, 2) and p.channels_last is False
    # Tiles overlap, so the tiled runs do more work per output pixel than one whole-image pass.
    whole = bench_model("asid", 2, **common)
    assert p.flops > whole.flops


def test_batched_protocol_tiles_match_one_at_a_time():
    loaded = build_model("imdn", 2, torch.device("cpu"))
    x = torch.rand(2, 3, 40, 36)
    one = forward_tiled_average(loaded, x, 16, 4)
    batched = forward_tiled_average(loaded, x, 16, 4, batch=5)
    torch.testing.assert_close(batched, one, rtol=0, atol=1e-5)


def test_channels_last_changes_layout_not_output():
    loaded = build_model("rlfn", 2, torch.device("cpu"))
    x = torch.rand(1, 3, 20, 20)
    with torch.inference_mode():
        ref = loaded.module(x)
        optimise_for_inference(loaded, torch.device("cpu"), channels_last=True)
        # 3x3 kernels: NHWC and NCHW layouts differ (a 1x1 kernel is both at once).
        weights = [p for p in loaded.module.parameters() if p.dim() == 4 and p.shape[-1] > 1]
        assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
        assert not any(p.is_contiguous() for p in weights)
        torch.testing.assert_close(loaded.module(x), ref, rtol=0, atol=1e-4)
        optimise_for_inference(loaded, torch.device("cpu"), channels_last=False)
        assert all(p.is_contiguous() for p in loaded.module.parameters())


def test_peak_table():
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4)
    assert peak_tflops("NVIDIA H100 PCIe", "fp16") == pytest.approx(756.0)
    assert peak_tflops("NVIDIA H200", "bf16") == pytest.approx(989.4)
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "bf16") == pytest.approx(312.0)
    assert peak_tflops("NVIDIA L40S", "bf16") == pytest.approx(362.0)  # not the L4 row
    assert peak_tflops("NVIDIA L4", "bf16") == pytest.approx(121.0)
    assert peak_tflops("NVIDIA GeForce RTX 4090", "fp16") == pytest.approx(165.2)
    assert peak_tflops("Tesla V100-SXM2-16GB", "bf16") is None  # no bf16 on Volta
    assert peak_tflops("Some Future GPU", "bf16") is None
    assert torch.get_float32_matmul_precision() == "highest"
    assert peak_tflops("NVIDIA H100 80GB HBM3", "fp32") == pytest.approx(66.9)


def test_parse_size():
    assert parse_size("256") == (256, 256)
    assert parse_size("320x240") == (240, 320)
    from srcli.errors import UsageError

    for bad in ("", "0", "12x", "axb", "1x2x3"):
        with pytest.raises(UsageError):
            parse_size(bad)


def test_cli_json_and_table(capsys):
    from srcli.cli import main

    argv = ["bench", "-m", "bicubic", "-s", "2", "--size", "16x8", "--device", "cpu", "--warmup", "0", "--iters", "2"]
    assert main([*argv, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["model"] == "bicubic" and record["input_size"] == [8, 16] and record["timed_runs"] == 2
    assert record["output_megapixels"] == pytest.approx(16 * 8 * 4 / 1e6) and record["mp_per_s"] > 0
    assert main(argv) == 0
    assert "output MP/s" in capsys.readouterr().out
    assert main(["bench", "-m", "no-such-model", "--device", "cpu"]) == 2
    assert main(["bench", "-m", "imdn", "--device", "cpu", "--precision", "fp16"]) == 2


def test_quick_plan_keeps_what_was_asked():
    from srcli.engine.bench import ACCELERATOR_PLAN, CPU_PLAN, MIN_TIMED_RUNS, quick_plan

    # A quick try on a CPU: 64 px, a 3 s budget that may stop after one timed run.
    assert quick_plan("cpu") == CPU_PLAN
    assert (CPU_PLAN.size, CPU_PLAN.max_seconds, CPU_PLAN.min_runs) == ((64, 64), 3.0, 1)
    # Accelerators keep the long-standing defaults: 256 px, 3 warm-up runs, 20 timed runs, no time limit.
    assert quick_plan("cuda") == ACCELERATOR_PLAN
    assert (ACCELERATOR_PLAN.size, ACCELERATOR_PLAN.warmup, ACCELERATOR_PLAN.iters) == ((256, 256), 3, 20)
    assert ACCELERATOR_PLAN.max_seconds is None
    asked = quick_plan("cpu", size=(32, 48), iters=5)
    assert (asked.size, asked.iters, asked.max_seconds, asked.min_runs) == ((32, 48), 5, None, MIN_TIMED_RUNS)
    budget = quick_plan("cpu", max_seconds=10.0)
    assert (budget.max_seconds, budget.min_runs) == (10.0, MIN_TIMED_RUNS)


def test_progress_hears_every_run_and_options_are_one_record():
    from srcli.engine.options import RunOptions

    heard: list[tuple[str, int, int]] = []
    options = RunOptions(model="bicubic", scale=2, device="cpu", tile=16, tile_overlap=2, batch=2)
    r = bench_model(size=(20, 20), warmup=2, iters=3, options=options, progress=lambda *a: heard.append(a))
    assert heard == [("warm-up", 1, 2), ("warm-up", 2, 2), ("timed", 1, 3), ("timed", 2, 3), ("timed", 3, 3)]
    assert (r.model, r.scale, r.mode, r.tile, r.overlap, r.batch) == ("bicubic", 2, "tiled", 16, 2, 2)


def test_cli_defaults_and_the_old_overlap_spelling(capsys):
    from srcli.cli import main
    from srcli.registry import DEFAULT_MODEL

    argv = ["bench", "--device", "cpu", "--warmup", "0", "--iters", "1", "--no-flops", "--json"]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    # The default model at its default scale, on the CPU's quick 64 px input.
    assert (record["model"], record["scale"], record["input_size"]) == (DEFAULT_MODEL, 4, [64, 64])
    tiled = ["bench", "-m", "bicubic", "-s", "2", "--size", "24", "--tile", "16", *argv[1:]]
    assert main([*tiled, "--overlap", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["overlap"] == 3
    assert main([*tiled, "--tile-overlap", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["overlap"] == 3
    assert main([*tiled, "--tile-overlap", "3", "--overlap", "4"]) == 2
    assert main(["bench", "--tile", "auto", "--device", "cpu"]) == 2
