"""Pick SurveyNet's width C and depth N: parameters and CPU speed of candidates, beside IMDN and RLFN-S.

Usage: ``python benchmarks/survey_net_size.py [--threads 2] [--repeats 3]``

For each candidate it prints the parameter count at x2 and x4, the multiply-accumulates per LR
pixel at x2 (counted on the convolutions: a load-independent measure of cost), the inference
throughput in output megapixels per second (x2, one 128x128 LR image, fp32, no grad) and the
training throughput in LR patches per second (x2, batch 16 of 32x32 LR patches, forward + L1 +
backward + Adam step). The machine is shared, so candidates are timed round-robin and each
figure is the best of ``--repeats`` rounds (after one warm-up).
"""

from __future__ import annotations

import argparse
import time

import torch

from srcli.archs.imdn import IMDN
from srcli.archs.rlfn import RLFN
from srcli.archs.survey_net import SurveyNet


def conv_macs_per_pixel(model: torch.nn.Module, size: int = 64) -> float:
    """Multiply-accumulates of every Conv2d per LR input pixel (attention pooling and elementwise ops excluded)."""
    total = 0

    def hook(module: torch.nn.Conv2d, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += out.numel() * (module.in_channels // module.groups) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.rand(1, 3, size, size))
    for h in handles:
        h.remove()
    return total / (size * size)


class Candidate:
    """One model under test, with its two timed workloads."""

    def __init__(self, name: str, make) -> None:  # noqa: ANN001 - make(scale) -> nn.Module
        self.name = name
        self.params = {s: sum(p.numel() for p in make(s).parameters()) for s in (2, 4)}
        self.macs = conv_macs_per_pixel(make(2).eval())
        self.eval_model = make(2).eval()
        self.train_model = make(2).train()
        self.opt = torch.optim.Adam(self.train_model.parameters(), lr=1e-4)
        self.x = torch.rand(1, 3, 128, 128)
        self.lr = torch.rand(16, 3, 32, 32)
        self.hr = torch.rand(16, 3, 64, 64)
        self.infer_s: list[float] = []
        self.step_s: list[float] = []

    def infer(self) -> None:
        with torch.no_grad():
            self.eval_model(self.x)

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        torch.nn.functional.l1_loss(self.train_model(self.lr), self.hr).backward()
        self.opt.step()

    def time_once(self) -> None:
        for fn, out in ((self.infer, self.infer_s), (self.step, self.step_s)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)


def main() -> None:
    """Print one row per candidate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    makers = [
        (f"survey C={c} N={n}", lambda s, c=c, n=n: SurveyNet(num_features=c, num_blocks=n, scale=s))
        for c, n in ((32, 4), (48, 4), (48, 6), (64, 4), (64, 6))
    ]
    makers += [
        ("imdn (64x6)", lambda s: IMDN(scale=s)),
        ("rlfn-s (48x6)", lambda s: RLFN(num_features=48, scale=s)),
    ]
    cands = [Candidate(name, make) for name, make in makers]
    for c in cands:  # warm-up: allocator and oneDNN primitive caches
        c.infer()
        c.step()
    for _ in range(args.repeats):
        for c in cands:
            c.time_once()
    print(f"{'model':<18} {'params x2':>10} {'params x4':>10} {'kMAC/px':>8} {'infer MP/s':>11} {'train patch/s':>14}")
    for c in cands:
        print(
            f"{c.name:<18} {c.params[2]:>10,} {c.params[4]:>10,} {c.macs / 1e3:>8.0f} "
            f"{256 * 256 / min(c.infer_s) / 1e6:>11.3f} {16 / min(c.step_s):>14.1f}"
        )


if __name__ == "__main__":
    main()
