"""ASID / ASID-D8: Attention-Sharing Information Distillation (Park et al., AAAI 2025).

Built from ``research/architectures.md`` §2 (the authors' code as it behaves) and the paper.
Submodule names reproduce the released raw state dicts, so they load with ``strict=True``;
note the asymmetric body prefix: ``block0.residual_layer.0.*`` (a one-element Sequential)
against ``blockK.residual_layer.*`` for the attention-sharing blocks.

Contract:

* Input and output are RGB in **[-1, 1]** (the authors normalise with mean 0.5, std 0.5).
* ``forward`` zero-pads right/bottom to a multiple of 8 and crops the result, as upstream does.
  Upstream fails on any side of 8 px or less (ESA's 7x7 max-pool then sees a 3x3 map); here a side
  is padded to at least 16 instead, so tiny inputs work. Inputs of 9 px or more are untouched by this.
* Attention sharing: only block 0 computes spatial attention maps (6 per forward, one per SLA/SGA);
  blocks 1+ reuse them and never compute a query-key similarity.
* Precision: LayerNorm2d and the channel attention's L2 normalisation, logits and softmax run in
  fp32 whatever the activation dtype (under autocast or ``.half()``); fp16 would otherwise overflow
  the variance and round the 1e-12 normalisation epsilon to 0.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srcli.archs.rlfn import ESA

#: Side of the spatial-attention windows / grids and of the channel-attention partitions.
WINDOW = 8
#: Smallest padded side: ESA's stride-2 conv and 7x7 max-pool need at least 15 px (16 keeps the multiple of 8).
MIN_PADDED_SIDE = 16

# Spatial attention maps of one block-0 pass, in order SLA1, SGA1, SLA2, SGA2, SLA3, SGA3.
AttentionMaps = list[Tensor]


def _no_autocast(t: Tensor) -> contextlib.AbstractContextManager:
    """A context that turns autocast off on ``t``'s device, so fp32 tensors stay fp32."""
    try:
        return torch.autocast(device_type=t.device.type, enabled=False)
    except RuntimeError:  # a device older torch has no autocast for: nothing to turn off
        return contextlib.nullcontext()


def similarity(q: Tensor, k: Tensor) -> Tensor:
    """Query-key similarity ``q @ k^T`` of the spatial attention (only block 0 ever calls it)."""
    return q @ k.transpose(-2, -1)


# --------------------------------------------------------------------------- normalisation, FFN


class LayerNorm2d(nn.Module):
    """Per-pixel LayerNorm over channels of an (N, C, H, W) map, computed in fp32."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        with _no_autocast(x):
            y = x.float()
            mu = y.mean(1, keepdim=True)
            var = (y - mu).pow(2).mean(1, keepdim=True)
            y = (y - mu) / torch.sqrt(var + self.eps)
            y = self.weight.float()[:, None, None] * y + self.bias.float()[:, None, None]
        return y.to(x.dtype)


class GatedFFN(nn.Module):
    """Gated depthwise-conv feed-forward: ``project_out(GELU(u1) * u2)``, bias-free."""

    def __init__(self, channels: int, expansion: int = 2) -> None:
        super().__init__()
        hidden = channels * expansion
        self.project_in = nn.Conv2d(channels, hidden, 1, bias=False)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False)
        self.project_out = nn.Conv2d(hidden // 2, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        u1, u2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(u1) * u2)


# --------------------------------------------------------------------------- local module (MBConv)


class _SpatialMean(nn.Module):
    """(N, C, H, W) -> (N, C)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


class SqueezeExcite(nn.Module):
    """Channel gate ``x * sigmoid(W2 SiLU(W1 mean_hw(x)))``; ``gate`` indices match the checkpoints."""

    def __init__(self, channels: int, shrinkage: float = 0.25) -> None:
        super().__init__()
        hidden = int(channels * shrinkage)
        self.gate = nn.Sequential(
            _SpatialMean(),
            nn.Linear(channels, hidden, bias=False),
            nn.SiLU(),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
            nn.Unflatten(1, (channels, 1, 1)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


class _Residual(nn.Module):
    """``fn(x) + x``."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x) + x


class LocalBlock(nn.Module):
    """The LM: an MBConv with expansion 1 (1x1, GELU, depthwise 3x3, GELU, SE, 1x1) and a residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = _Residual(
            nn.Sequential(
                nn.Conv2d(channels, channels, 1),
                nn.GELU(),
                nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
                nn.GELU(),
                SqueezeExcite(channels),
                nn.Conv2d(channels, channels, 1),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# --------------------------------------------------------------------------- spatial attention (SAM)


def _partition(x: Tensor, grid: bool) -> Tensor:
    """(N, C, H, W) -> (N * X * Y, 64, C) token groups.

    Windows (``grid=False``): contiguous 8x8 blocks. Grid: group (x, y) holds the 64 pixels
    ``(w1 * X + x, w2 * Y + y)``, i.e. spaced H/8 and W/8 apart across the whole map.
    """
    n, c, h, w = x.shape
    gx, gy = h // WINDOW, w // WINDOW
    if grid:
        t = x.reshape(n, c, WINDOW, gx, WINDOW, gy).permute(0, 3, 5, 2, 4, 1)
    else:
        t = x.reshape(n, c, gx, WINDOW, gy, WINDOW).permute(0, 2, 4, 3, 5, 1)
    return t.reshape(n * gx * gy, WINDOW * WINDOW, c)


def _unpartition(t: Tensor, shape: torch.Size, grid: bool) -> Tensor:
    """Inverse of :func:`_partition`."""
    n, c, h, w = shape
    gx, gy = h // WINDOW, w // WINDOW
    t = t.reshape(n, gx, gy, WINDOW, WINDOW, c)
    if grid:
        return t.permute(0, 5, 3, 1, 4, 2).reshape(n, c, h, w)
    return t.permute(0, 5, 1, 3, 2, 4).reshape(n, c, h, w)


def _relative_position_indices(window: int) -> Tensor:
    """(w*w, w*w) index into a (2w-1)^2 bias table: ``(di + w-1) * (2w-1) + (dj + w-1)``, query minus key."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    coords = coords.flatten(1).t()  # (w*w, 2), 'ij' order
    rel = coords[:, None, :] - coords[None, :, :] + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


class ComputingAttention(nn.Module):
    """Single-head window attention with a relative position bias; returns its softmax map for sharing."""

    def __init__(self, dim: int, window: int = WINDOW) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim, bias=False), nn.Dropout(0.0))
        self.rel_pos_bias = nn.Embedding((2 * window - 1) ** 2, 1)
        # Derived from the window size, never saved (absent from the released checkpoints).
        self.register_buffer("rel_pos_indices", _relative_position_indices(window), persistent=False)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        q, k, v = self.to_qkv(tokens).chunk(3, dim=-1)
        logits = similarity(q * self.scale, k) + self.rel_pos_bias(self.rel_pos_indices)[..., 0]
        attn = logits.softmax(dim=-1)
        return self.to_out(attn @ v), attn


class SharingAttention(nn.Module):
    """Attention that reuses block 0's map: ``to_out(A_shared @ to_v(x))``; no query, key or bias."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim, bias=False), nn.Dropout(0.0))

    def forward(self, tokens: Tensor, attn: Tensor) -> Tensor:
        v = self.to_v(tokens)
        return self.to_out(attn.to(v.dtype) @ v)


class SpatialAttentionModule(nn.Module):
    """SLA (8x8 windows, ``grid=False``) or SGA (8x8 dilated grid): attention + gated FFN, both residual."""

    def __init__(self, dim: int, grid: bool, computes_attention: bool) -> None:
        super().__init__()
        self.grid = grid
        self.norm = nn.LayerNorm(dim)
        self.attn: nn.Module = ComputingAttention(dim) if computes_attention else SharingAttention(dim)
        self.cnorm = LayerNorm2d(dim)
        self.gfn = GatedFFN(dim)

    def forward(self, x: Tensor, shared: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Return the refined map and the attention map used (computed here, or ``shared``)."""
        tokens = _partition(x, self.grid)
        if shared is None:
            out, attn = self.attn(self.norm(tokens))
        else:
            out, attn = self.attn(self.norm(tokens), shared), shared
        y = _unpartition(out + tokens, x.shape, self.grid)
        return y + self.gfn(self.cnorm(y)), attn


# --------------------------------------------------------------------------- channel attention (CAM)


class ChannelAttention(nn.Module):
    """Transposed (channel x channel) attention per 8x8 window, or per grid phase ``(r mod 8, c mod 8)``."""

    def __init__(self, channels: int, grid: bool) -> None:
        super().__init__()
        self.grid = grid
        self.temperature = nn.Parameter(torch.ones(1, 1, 1))
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(channels * 3, channels * 3, 3, padding=1, groups=channels * 3, bias=False)
        self.project_out = nn.Conv2d(channels, channels, 1, bias=False)

    def _groups(self, t: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, G, C, P): G groups of P pixels each."""
        n, c, h, w = t.shape
        gx, gy = h // WINDOW, w // WINDOW
        if self.grid:  # group = (r mod 8, c mod 8): (H/8)(W/8) pixels spanning the whole map
            t = t.reshape(n, c, gx, WINDOW, gy, WINDOW).permute(0, 3, 5, 1, 2, 4)
            return t.reshape(n, WINDOW * WINDOW, c, gx * gy)
        t = t.reshape(n, c, gx, WINDOW, gy, WINDOW).permute(0, 2, 4, 1, 3, 5)
        return t.reshape(n, gx * gy, c, WINDOW * WINDOW)

    def _ungroup(self, t: Tensor, shape: torch.Size) -> Tensor:
        n, c, h, w = shape
        gx, gy = h // WINDOW, w // WINDOW
        if self.grid:
            return t.reshape(n, WINDOW, WINDOW, c, gx, gy).permute(0, 3, 4, 1, 5, 2).reshape(shape)
        return t.reshape(n, gx, gy, c, WINDOW, WINDOW).permute(0, 3, 1, 4, 2, 5).reshape(shape)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (self._groups(t) for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        # fp32: eps 1e-12 is 0 in fp16, and the grid variant sums squares over the whole image.
        with _no_autocast(q):
            q = F.normalize(q.float(), dim=-1, eps=1e-12)
            k = F.normalize(k.float(), dim=-1, eps=1e-12)
            attn = ((q @ k.transpose(-2, -1)) * self.temperature.float()).softmax(dim=-1)
        out = attn.to(v.dtype) @ v
        return self.project_out(self._ungroup(out, x.shape))


class ChannelAttentionModule(nn.Module):
    """The CAM: window channel attention, FFN, grid channel attention, FFN; each pre-normed and residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.canorm1 = LayerNorm2d(channels)
        self.canorm2 = LayerNorm2d(channels)
        self.cttn1 = ChannelAttention(channels, grid=False)
        self.cttn2 = ChannelAttention(channels, grid=True)
        self.cnorm1 = LayerNorm2d(channels)
        self.cnorm2 = LayerNorm2d(channels)
        self.gfn1 = GatedFFN(channels)
        self.gfn2 = GatedFFN(channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.cttn1(self.canorm1(x)) + x
        x = self.gfn1(self.cnorm1(x)) + x
        x = self.cttn2(self.canorm2(x)) + x
        return self.gfn2(self.cnorm2(x)) + x


# --------------------------------------------------------------------------- information distillation block


class DistillationBody(nn.Module):
    """Three LM -> SAM steps that each split off a quarter of the channels, a fusion, then the CAM."""

    def __init__(self, channels: int, computes_attention: bool) -> None:
        super().__init__()
        q = channels // 4
        self.split = q
        widths = (channels - q, channels - 2 * q, channels - 3 * q)  # 36, 24, 12 at 48 channels
        self.LB1 = LocalBlock(channels)
        self.LB2 = LocalBlock(widths[0])
        self.LB3 = LocalBlock(widths[1])
        for i, d in enumerate(widths, 1):
            self.add_module(f"SLA{i}", SpatialAttentionModule(d, grid=False, computes_attention=computes_attention))
        for i, d in enumerate(widths, 1):
            self.add_module(f"SGA{i}", SpatialAttentionModule(d, grid=True, computes_attention=computes_attention))
        self.BlockC = ChannelAttentionModule(channels)
        self.pw1 = nn.Conv2d(channels, channels, 1)
        self.pw2 = nn.Conv2d(widths[0], widths[0], 1)
        self.pw3 = nn.Conv2d(channels, channels, 1)

    def _sam(self, i: int, x: Tensor, maps: AttentionMaps, shared: AttentionMaps | None) -> Tensor:
        """SLA_i then SGA_i; appends the maps used (A_{2i-1}, A_{2i}) to ``maps``."""
        for name, slot in ((f"SLA{i}", 2 * i - 2), (f"SGA{i}", 2 * i - 1)):
            x, attn = getattr(self, name)(x, None if shared is None else shared[slot])
            maps.append(attn)
        return x

    def forward(self, x: Tensor, shared: AttentionMaps | None = None) -> tuple[Tensor, AttentionMaps]:
        q, maps = self.split, []
        x = self.LB1(x)
        x = self.pw1(torch.cat([self._sam(1, x[:, q:], maps, shared), x[:, :q]], dim=1))
        x1 = x[:, :q]
        x = self.LB2(x[:, q:])
        x = self.pw2(torch.cat([self._sam(2, x[:, q:], maps, shared), x[:, :q]], dim=1))
        x2 = x[:, :q]
        x = self.LB3(x[:, q:])
        x = self.pw3(torch.cat([x1, x2, self._sam(3, x[:, q:], maps, shared), x[:, :q]], dim=1))
        return self.BlockC(x), maps


class ComputingIDB(nn.Module):
    """Block 0: computes and returns the six spatial attention maps. Body at ``residual_layer.0``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        # Registration order reproduces the checkpoints' state-dict order.
        self.res_end = nn.Conv2d(channels, channels, 1)
        self.residual_layer = nn.Sequential(DistillationBody(channels, computes_attention=True))
        self.esa = ESA(max(channels // 4, 16), channels)

    def forward(self, x: Tensor) -> tuple[Tensor, AttentionMaps]:
        body, maps = self.residual_layer[0](x)
        return self.esa(self.res_end(body) + x), maps


class SharingIDB(nn.Module):
    """Blocks 1+: reuse block 0's maps, never compute attention. Body at ``residual_layer``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.residual_layer = DistillationBody(channels, computes_attention=False)
        self.res_end = nn.Conv2d(channels, channels, 1)
        self.esa = ESA(max(channels // 4, 16), channels)

    def forward(self, x: Tensor, shared: AttentionMaps) -> Tensor:
        body, _ = self.residual_layer(x, shared)
        return self.esa(self.res_end(body) + x)


# --------------------------------------------------------------------------- network


def padded_side(n: int) -> int:
    """The side ``forward`` pads ``n`` to: the next multiple of 8, and at least 16."""
    return max(-(-n // WINDOW) * WINDOW, MIN_PADDED_SIDE)


class ASID(nn.Module):
    """ASID (``num_blocks=3``) or ASID-D8 (``num_blocks=8``): N,3,H,W in [-1, 1] -> N,3,sH,sW in [-1, 1]."""

    def __init__(self, scale: int = 4, num_blocks: int = 3, num_features: int = 48) -> None:
        super().__init__()
        if num_features % 4:
            raise ValueError(f"num_features must be a multiple of 4, got {num_features}")
        self.scale = scale
        self.num_blocks = num_blocks
        self.block0 = ComputingIDB(num_features)
        for i in range(1, num_blocks):
            self.add_module(f"block{i}", SharingIDB(num_features))
        self.input = nn.Conv2d(3, num_features, 3, padding=1)
        self.output = nn.Conv2d(num_features, num_features, 3, padding=1)
        self.up = nn.Sequential(nn.Conv2d(num_features, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        # Zero (not reflect) padding: the weights were trained and evaluated with it.
        x = F.pad(x, (0, padded_side(w) - w, 0, padded_side(h) - h))
        feat = self.input(x)
        out, maps = self.block0(feat)
        for i in range(1, self.num_blocks):
            out = getattr(self, f"block{i}")(out, maps)
        out = self.up(self.output(out) + feat)
        return out[..., : h * self.scale, : w * self.scale]
