"""IMDN: Information Multi-distillation Network (Hui et al., ACM MM 2019).

Submodule names follow the official checkpoints' state-dict keys (after stripping the
``module.`` prefix left by DataParallel), so they load with ``strict=True``.
Expects input in [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# The official model uses LeakyReLU with this slope everywhere it has an activation.
_NEG_SLOPE = 0.05


def _conv(in_ch: int, out_ch: int, kernel_size: int) -> nn.Conv2d:
    """Same-size convolution with bias."""
    return nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)


class CCALayer(nn.Module):
    """Contrast-aware channel attention: per-channel (std + mean) drives a squeeze-excite gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        # Population std (no Bessel correction, no epsilon), as the weights were trained with.
        std = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
        return x * self.conv_du(std + mean)


class IMDB(nn.Module):
    """Information multi-distillation block.

    Each 3x3 step keeps the first quarter of its channels (distilled) and refines the
    remaining three quarters further; the distilled parts are concatenated, gated by CCA,
    fused by a 1x1 conv and added to the block input.
    """

    def __init__(self, channels: int, distill_ratio: float = 0.25) -> None:
        super().__init__()
        self.distilled = int(channels * distill_ratio)
        self.remaining = channels - self.distilled
        self.c1 = _conv(channels, channels, 3)
        self.c2 = _conv(self.remaining, channels, 3)
        self.c3 = _conv(self.remaining, channels, 3)
        self.c4 = _conv(self.remaining, self.distilled, 3)
        self.act = nn.LeakyReLU(_NEG_SLOPE, inplace=True)
        self.cca = CCALayer(self.distilled * 4)
        self.c5 = _conv(self.distilled * 4, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        split = (self.distilled, self.remaining)
        d1, r1 = torch.split(self.act(self.c1(x)), split, dim=1)
        d2, r2 = torch.split(self.act(self.c2(r1)), split, dim=1)
        d3, r3 = torch.split(self.act(self.c3(r2)), split, dim=1)
        d4 = self.c4(r3)  # last step: no activation, output is all "distilled"
        out = torch.cat([d1, d2, d3, d4], dim=1)
        return self.c5(self.cca(out)) + x


class IMDN(nn.Module):
    """IMDN super-resolution network: N,C,H,W in [0, 1] -> N,C,H*scale,W*scale."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        num_features: int = 64,
        num_blocks: int = 6,
        scale: int = 4,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.num_blocks = num_blocks
        self.fea_conv = _conv(in_channels, num_features, 3)
        # Blocks are attributes IMDB1..IMDBn (not a ModuleList) because that is the checkpoint key layout.
        for i in range(1, num_blocks + 1):
            self.add_module(f"IMDB{i}", IMDB(num_features))
        self.c = nn.Sequential(
            _conv(num_features * num_blocks, num_features, 1),
            nn.LeakyReLU(_NEG_SLOPE, inplace=True),
        )
        self.LR_conv = _conv(num_features, num_features, 3)
        self.upsampler = nn.Sequential(
            _conv(num_features, out_channels * scale * scale, 3),
            nn.PixelShuffle(scale),
        )

    def forward(self, x: Tensor) -> Tensor:
        fea = self.fea_conv(x)
        outs = []
        out = fea
        for i in range(1, self.num_blocks + 1):
            out = getattr(self, f"IMDB{i}")(out)
            outs.append(out)
        # Every block's output feeds the fusion conv, not just the last one.
        out = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea
        return self.upsampler(out)
