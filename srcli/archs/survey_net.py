"""SurveyNet: the small CNN proposed in the Hitchhiker's Guide to Super-Resolution ("Possible Architecture").

The survey draws it as two flowcharts, implemented here step by step:

* network: 3x3 conv (3 -> C) + ReLU gives the shallow features F0; N residual distillation
  blocks; every block's output concatenated and fused by a 1x1 conv (N*C -> C); ESA spatial
  attention; a long skip (+ F0); a 3x3 conv to 3*s^2 channels and a pixel shuffle;
* residual distillation block: three 3x3 conv + ReLU steps in sequence, their three outputs
  concatenated (3C) and fused by a 1x1 conv, channel attention, then the block input added.

The survey does not define the channel attention or ESA further; we use the usual
squeeze-and-excitation channel attention (global average, 1x1 down, ReLU, 1x1 up, sigmoid)
and the RLFN/ESA spatial attention already in ``srcli.archs.rlfn``. It expects input in
[0, 1]. Because ESA pools with a 7x7 window after a stride-2 conv, both input sides must be
at least ``MIN_INPUT_SIZE`` pixels (the engine pads smaller inputs).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from srcli.archs.rlfn import ESA, MIN_INPUT_SIZE

__all__ = ["MIN_INPUT_SIZE", "ChannelAttention", "ResidualDistillationBlock", "SurveyNet"]


def _conv(in_ch: int, out_ch: int, kernel_size: int) -> nn.Conv2d:
    """Same-size convolution with bias."""
    return nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation gate: per-channel mean drives a two-layer bottleneck and a sigmoid."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        # At least 4 hidden units: with 48 channels and reduction 16 the bottleneck would be 3 wide.
        hidden = max(channels // reduction, 4)
        self.down = nn.Conv2d(channels, hidden, 1)
        self.up = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.up(torch.relu(self.down(x.mean(dim=(2, 3), keepdim=True)))).sigmoid()
        return x * gate


class ResidualDistillationBlock(nn.Module):
    """Three 3x3 conv + ReLU steps; all three outputs are concatenated, fused 1x1, gated, added to the input."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels, 3)
        self.conv2 = _conv(channels, channels, 3)
        self.conv3 = _conv(channels, channels, 3)
        self.fuse = nn.Conv2d(3 * channels, channels, 1)
        self.ca = ChannelAttention(channels, reduction)

    def forward(self, x: Tensor) -> Tensor:
        f1 = torch.relu(self.conv1(x))
        f2 = torch.relu(self.conv2(f1))
        f3 = torch.relu(self.conv3(f2))
        return self.ca(self.fuse(torch.cat([f1, f2, f3], dim=1))) + x


class SurveyNet(nn.Module):
    """The survey's network: N,3,H,W in [0, 1] -> N,3,H*scale,W*scale (H, W >= ``MIN_INPUT_SIZE``)."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        num_features: int = 48,
        num_blocks: int = 4,
        esa_channels: int = 16,
        reduction: int = 16,
        scale: int = 4,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.head = _conv(in_channels, num_features, 3)
        self.blocks = nn.ModuleList(ResidualDistillationBlock(num_features, reduction) for _ in range(num_blocks))
        self.fuse = nn.Conv2d(num_blocks * num_features, num_features, 1)
        self.esa = ESA(esa_channels, num_features)
        # Scale-specific tail: everything before it is shared by x2/x3/x4 (so x3/x4 can start from x2).
        self.upsampler = nn.Sequential(
            _conv(num_features, out_channels * scale * scale, 3),
            nn.PixelShuffle(scale),
        )

    def forward(self, x: Tensor) -> Tensor:
        if min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise ValueError(
                f"SurveyNet needs inputs of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}, got {tuple(x.shape[-2:])}"
            )
        shallow = torch.relu(self.head(x))
        outs = []
        out = shallow
        for block in self.blocks:
            out = block(out)
            outs.append(out)
        deep = self.esa(self.fuse(torch.cat(outs, dim=1)))
        return self.upsampler(deep + shallow)
