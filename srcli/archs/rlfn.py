"""RLFN / RLFN-S: Residual Local Feature Network (Kong et al., CVPRW 2022).

Submodule names follow the official checkpoints' state-dict keys so they load with
``strict=True``. RLFN uses 52 features, RLFN-S 48; both have six blocks.
The official weights were trained on inputs in [0, 255] and produce [0, 255]; the
module does no range conversion, so the caller must scale.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

# The official model uses LeakyReLU with this slope inside each block.
_NEG_SLOPE = 0.05

# ESA downsamples with a stride-2 3x3 conv (no padding) then a 7x7 stride-3 max-pool,
# so each spatial side needs at least 15 pixels: (15 - 3) // 2 + 1 = 7.
MIN_INPUT_SIZE = 15


def _conv(in_ch: int, out_ch: int, kernel_size: int) -> nn.Conv2d:
    """Same-size convolution with bias."""
    return nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)


class ESA(nn.Module):
    """Enhanced spatial attention: a coarse, large-receptive-field mask that gates the features."""

    def __init__(self, esa_channels: int, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, esa_channels, 1)
        self.conv_f = nn.Conv2d(esa_channels, esa_channels, 1)
        self.conv2 = nn.Conv2d(esa_channels, esa_channels, 3, stride=2, padding=0)
        self.conv3 = _conv(esa_channels, esa_channels, 3)
        self.conv4 = nn.Conv2d(esa_channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        reduced = self.conv1(x)
        coarse = F.max_pool2d(self.conv2(reduced), kernel_size=7, stride=3)
        coarse = F.interpolate(self.conv3(coarse), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * self.conv4(coarse + self.conv_f(reduced)).sigmoid()


class RLFB(nn.Module):
    """Residual local feature block: three conv+LeakyReLU with a local skip, a 1x1 conv, then ESA."""

    def __init__(self, channels: int, esa_channels: int) -> None:
        super().__init__()
        self.c1_r = _conv(channels, channels, 3)
        self.c2_r = _conv(channels, channels, 3)
        self.c3_r = _conv(channels, channels, 3)
        self.c5 = nn.Conv2d(channels, channels, 1)
        self.esa = ESA(esa_channels, channels)
        self.act = nn.LeakyReLU(_NEG_SLOPE, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.c1_r(x))
        out = self.act(self.c2_r(out))
        out = self.act(self.c3_r(out))
        return self.esa(self.c5(out + x))


class RLFN(nn.Module):
    """RLFN super-resolution network: N,C,H,W in [0, 255] -> N,C,H*scale,W*scale in [0, 255].

    Both spatial sides of the input must be at least ``MIN_INPUT_SIZE`` pixels.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        num_features: int = 52,
        esa_channels: int = 16,
        scale: int = 4,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.conv_1 = _conv(in_channels, num_features, 3)
        # Six blocks as attributes block_1..block_6: that is the checkpoint key layout.
        self.block_1 = RLFB(num_features, esa_channels)
        self.block_2 = RLFB(num_features, esa_channels)
        self.block_3 = RLFB(num_features, esa_channels)
        self.block_4 = RLFB(num_features, esa_channels)
        self.block_5 = RLFB(num_features, esa_channels)
        self.block_6 = RLFB(num_features, esa_channels)
        self.conv_2 = _conv(num_features, num_features, 3)
        self.upsampler = nn.Sequential(
            _conv(num_features, out_channels * scale * scale, 3),
            nn.PixelShuffle(scale),
        )

    def forward(self, x: Tensor) -> Tensor:
        if min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise ValueError(
                f"RLFN needs inputs of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}, got {tuple(x.shape[-2:])}"
            )
        fea = self.conv_1(x)
        out = fea
        for block in (self.block_1, self.block_2, self.block_3, self.block_4, self.block_5, self.block_6):
            out = block(out)
        return self.upsampler(self.conv_2(out) + fea)
