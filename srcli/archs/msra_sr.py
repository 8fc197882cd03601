"""MSRA-SR: image SR Transformer with Multi-scale Shared Representation Acquisition (Zhou et al., ICCV 2023).

The authors published neither code nor weights (their implementation used MindSpore), so this module is our
reading of the paper. docs/msra-sr.md records, choice by choice, what the paper states and what we chose.
In short:

- paper: a SwinIR-like layout (3x3 conv, groups of Transformer blocks with a 3x3 conv and a residual,
  sub-pixel reconstruction); window 16, 6 heads, MLP ratio 2; lightweight 4 x 4 blocks of 60 channels,
  classical 6 x 4 blocks of 192 channels;
- paper: cross-scale attention (CSA) with s = 1, 2, 4 (queries at full resolution, keys downscaled by s,
  values pixel-unshuffled by s, windows on the projected maps, branches fused by a 1x1 conv);
- paper: shared self-attention (the similarity map is computed in the first layer, later layers derive theirs
  with a 3x3 depthwise conv F);
- paper: channel attention as global attention, ``X * sigmoid(MLP(GAP(X)))``;
- paper: multi-scale depthwise convolutions (1/3/5/7) in the feed-forward network, re-parameterised into one
  7x7 kernel for inference;
- ours: the heads split evenly over the scales; sharing restarts in each group; F convolves each query's
  s = 1 logits over the key window (the cross-scale logits are passed on unchanged); channel attention with
  hidden width C on the attention output; GELU before the depthwise convs; no shifted windows; a
  relative-position bias on the s = 1 branch; mirror padding to a multiple of 64 inside the model.

Layout: images are (B, C, H, W); the Transformer blocks work on channel-last maps (B, H, W, C).
Checkpoints are kept in the deploy (re-parameterised) form; ``load_state_dict`` also accepts the training
form and folds it (see ``MSRASR.adapt_state_dict``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# DIV2K mean, subtracted at the input and added back at the output (SwinIR convention).
_RGB_MEAN = (0.4488, 0.4371, 0.4040)

_BRANCH_KEY = ".branches."
_REPARAM_KEY = ".reparam."


def pad_reflect(x: Tensor, bottom: int, right: int) -> Tensor:
    """Mirror-pad ``x`` (B, C, H, W) at the bottom and right by any amount.

    ``F.pad(mode="reflect")`` needs the pad to be smaller than the side, so larger pads are applied in
    steps (mirroring the already padded image); a side of one pixel can only be replicated.
    """
    while bottom > 0 or right > 0:
        h, w = x.shape[-2:]
        pb = min(bottom, h - 1)
        pr = min(right, w - 1)
        if (bottom > 0 and pb == 0) or (right > 0 and pr == 0):
            return F.pad(x, (0, right, 0, bottom), mode="replicate")
        x = F.pad(x, (0, pr, 0, pb), mode="reflect")
        bottom, right = bottom - pb, right - pr
    return x


# --------------------------------------------------------------------------------------------------------------
# Multi-scale depthwise convolution (MS-DWC) and its re-parameterisation.


def fold_kernels(weights: Sequence[Tensor], biases: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Sum parallel depthwise kernels of odd sizes into one kernel of the largest size (exact).

    Each (C, 1, k, k) kernel is zero-padded to the largest size, centred; the biases add up. Because the
    branches are linear and summed, the single conv computes the same function.
    """
    size = max(w.shape[-1] for w in weights)
    fused = weights[0].new_zeros((*weights[0].shape[:2], size, size))
    for w in weights:
        pad = (size - w.shape[-1]) // 2
        fused = fused + F.pad(w, (pad, pad, pad, pad))
    return fused, torch.stack(list(biases)).sum(0)


class MultiScaleDWConv(nn.Module):
    """Parallel depthwise convolutions with kernels ``kernels`` (summed), or their folded single kernel.

    Training form: ``branches.i`` (one ``Conv2d`` per kernel size, each with a bias). Deploy form: ``reparam``
    (one depthwise conv of the largest size). ``reparameterize()`` switches in place.
    """

    def __init__(self, channels: int, kernels: Sequence[int] = (1, 3, 5, 7), deploy: bool = False) -> None:
        super().__init__()
        if not kernels or any(k % 2 == 0 for k in kernels):
            raise ValueError(f"MS-DWC kernels must be odd sizes, got {tuple(kernels)}")
        self.channels = channels
        self.kernels = tuple(sorted(kernels))
        self.deploy = deploy
        size = self.kernels[-1]
        if deploy:
            self.reparam = nn.Conv2d(channels, channels, size, padding=size // 2, groups=channels)
        else:
            self.branches = nn.ModuleList(
                nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels) for k in self.kernels
            )

    def forward(self, x: Tensor) -> Tensor:
        if self.deploy:
            return self.reparam(x)
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the branches by one conv computing the same function (no-op in deploy form)."""
        if self.deploy:
            return
        weight, bias = fold_kernels([b.weight for b in self.branches], [b.bias for b in self.branches])
        size = weight.shape[-1]
        conv = nn.Conv2d(self.channels, self.channels, size, padding=size // 2, groups=self.channels)
        conv = conv.to(device=weight.device, dtype=weight.dtype)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        del self.branches
        self.reparam = conv
        self.deploy = True


def fold_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Turn a training-form MSRA-SR state dict into the deploy form (``branches.i`` -> ``reparam``)."""
    out: dict[str, Tensor] = {}
    groups: dict[str, dict[int, dict[str, Tensor]]] = {}
    for key, value in state.items():
        if _BRANCH_KEY not in key:
            out[key] = value
            continue
        prefix, _, rest = key.partition(_BRANCH_KEY)
        index, _, leaf = rest.partition(".")
        groups.setdefault(prefix, {}).setdefault(int(index), {})[leaf] = value
    for prefix, branches in groups.items():
        ordered = [branches[i] for i in sorted(branches)]
        weight, bias = fold_kernels([b["weight"] for b in ordered], [b["bias"] for b in ordered])
        out[f"{prefix}{_REPARAM_KEY}weight"] = weight
        out[f"{prefix}{_REPARAM_KEY}bias"] = bias
    return out


class ConvFFN(nn.Module):
    """fc1 -> GELU -> MS-DWC -> fc2 on channel-last maps (the MS-DWC sits between the two MLP layers)."""

    def __init__(self, dim: int, hidden: int, kernels: Sequence[int], deploy: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.dwconv = MultiScaleDWConv(hidden, kernels, deploy) if kernels else None
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.fc1(x))
        if self.dwconv is not None:
            x = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.fc2(x)


class ChannelAttention(nn.Module):
    """Global attention as channel attention (paper Eq. 4): ``X * sigmoid(W(GAP(X)))``, W a two-layer MLP."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.mean(dim=(1, 2), keepdim=True)  # (B, 1, 1, C): every token contributes
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(pooled))))


# --------------------------------------------------------------------------------------------------------------
# Cross-scale attention with sharing.


def _phase_windows(t: Tensor, s: int, ws: int) -> Tensor:
    """(B, H, W, c) -> (B * nW, s*s, ws*ws, c).

    The map is cut into (ws*s) x (ws*s) super-windows; each is split into its s*s dilated sub-grids
    ("phases" (a, b): pixels ws*s*I + s*i + a, ws*s*J + s*j + b), each a ws x ws grid. For the value map this
    is the window partition of the pixel-unshuffled map, one channel group per phase.
    """
    b, h, w, c = t.shape
    t = t.view(b, h // (ws * s), ws, s, w // (ws * s), ws, s, c)
    t = t.permute(0, 1, 4, 3, 6, 2, 5, 7)  # B, I, J, a, b, i, j, c
    return t.reshape(-1, s * s, ws * ws, c)


def _phase_merge(t: Tensor, s: int, ws: int, b: int, h: int, w: int) -> Tensor:
    """Inverse of ``_phase_windows``: (B * nW, s*s, ws*ws, c) -> (B, H, W, c)."""
    c = t.shape[-1]
    t = t.view(b, h // (ws * s), w // (ws * s), s, s, ws, ws, c)
    t = t.permute(0, 1, 5, 3, 2, 6, 4, 7)  # B, I, i, a, J, j, b, c
    return t.reshape(b, h, w, c)


def _pooled_windows(t: Tensor, s: int, ws: int) -> Tensor:
    """(B, H, W, c) -> (B * nW, ws*ws, c): the map average-pooled by s, then cut into ws x ws windows."""
    b, h, w, c = t.shape
    if s > 1:
        t = t.view(b, h // s, s, w // s, s, c).mean(dim=(2, 4))
    hs, wsz = h // s, w // s
    t = t.view(b, hs // ws, ws, wsz // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return t.reshape(-1, ws * ws, c)


def _similarity(q: Tensor, k: Tensor) -> Tensor:
    """Exhaustive token matching ``q @ k^T``; the one step that shared layers skip (tests count its calls)."""
    return q @ k.transpose(-2, -1)


def _relative_position_index(ws: int) -> Tensor:
    """(ws*ws, ws*ws) index into a (2*ws-1)^2 table of relative offsets (SwinIR's window bias)."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


class CrossScaleAttention(nn.Module):
    """Window attention whose heads are split over the scales ``scales`` (cross-scale matching).

    For scale s a head group matches full-resolution queries against keys average-pooled by s, inside
    (ws*s) x (ws*s) super-windows (a ws x ws window of the downscaled map). Its values are the pixel-unshuffled
    value map: the query at phase (a, b) of an s x s cell reads channel group (a, b), i.e. the value pixel at
    its own phase in every cell, so no value pixel is averaged away. The branch outputs are concatenated and
    fused by a 1x1 projection. With ``scales=(1,)`` this is plain (SwinIR) window attention.

    A *computing* layer owns the ``qk`` projection and returns its pre-softmax logits; a *sharing* layer gets
    the previous layer's logits instead. It refines the window self-attention (s = 1) logits with a depthwise
    conv F (``share``) over each query's key window and passes the cross-scale logits on unchanged (the cost
    the paper's Table 4 gives for F matches one such map per head of one branch). Both kinds of layer have
    their own value and output projections.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        scales: Sequence[int],
        computes: bool,
        share_kernel: int | None,
    ) -> None:
        super().__init__()
        if num_heads % len(scales) or dim % num_heads:
            raise ValueError(f"{num_heads} heads must split evenly over scales {tuple(scales)} and {dim} channels")
        self.dim = dim
        self.window_size = window_size
        self.scales = tuple(scales)
        self.computes = computes
        self.heads = num_heads // len(scales)  # per scale
        self.head_dim = dim // num_heads
        self.qk_scale = self.head_dim**-0.5
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        n = window_size * window_size
        if computes:
            self.qk = nn.Linear(dim, 2 * dim)
            self.share = None
            self.rpb_table: nn.Parameter | None = None
            if 1 in self.scales:
                self.rpb_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, self.heads))
                nn.init.trunc_normal_(self.rpb_table, std=0.02)
                self.register_buffer("rpb_index", _relative_position_index(window_size).view(n * n), False)
        else:
            self.rpb_table = None
            if share_kernel is None or 1 not in self.scales:
                self.share = None  # F = identity
            else:
                k = share_kernel
                self.share = nn.Conv2d(self.heads, self.heads, k, padding=k // 2, groups=self.heads)
                # Start as the identity: a sharing layer first reuses the inherited map as it is.
                nn.init.dirac_(self.share.weight)
                nn.init.zeros_(self.share.bias)

    def _heads(self, t: Tensor) -> Tensor:
        """(B', P, N, heads * d) -> (B', P, heads, N, d)."""
        bw, p, n, _ = t.shape
        return t.view(bw, p, n, self.heads, self.head_dim).transpose(2, 3)

    def _transform(self, logits: Tensor, conv: nn.Conv2d) -> Tensor:
        """F: a depthwise conv (heads as channels) over each query's ws x ws map of key logits."""
        bw, p, h, n, _ = logits.shape
        ws = self.window_size
        # Each (head, query) pair is one channel of a depthwise conv whose kernel depends on the head only:
        # no transpose is needed, and one wide depthwise conv is much faster than many narrow ones.
        x = logits.reshape(bw * p, h * n, ws, ws)
        weight = conv.weight.repeat_interleave(n, dim=0).to(x.dtype)
        bias = conv.bias.repeat_interleave(n).to(x.dtype)
        x = F.conv2d(x, weight, bias, padding=conv.padding, groups=h * n)
        return x.view(bw, p, h, n, n)

    def forward(self, x: Tensor, shared: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor]]:
        """Attend over ``x`` (B, H, W, C), H and W multiples of window * max(scales).

        Returns the output (B, H, W, C) and the logits of each scale (for the next sharing layer).
        """
        b, h, w, c = x.shape
        ws = self.window_size
        chunk = self.heads * self.head_dim
        v = self.v(x)
        if self.computes:
            q, k = self.qk(x).chunk(2, dim=-1)
        elif shared is None:
            raise ValueError("a sharing attention layer needs the logits of the previous layer")
        outs: list[Tensor] = []
        logits_out: list[Tensor] = []
        for i, s in enumerate(self.scales):
            part = slice(i * chunk, (i + 1) * chunk)
            if self.computes:
                qs = self._heads(_phase_windows(q[..., part], s, ws)) * self.qk_scale
                ks = self._heads(_pooled_windows(k[..., part], s, ws).unsqueeze(1))
                logits = _similarity(qs, ks)  # (B', s*s, heads, N, N)
                if s == 1 and self.rpb_table is not None:
                    n = ws * ws
                    bias = self.rpb_table[self.rpb_index].view(n, n, self.heads).permute(2, 0, 1)
                    logits = logits + bias.to(logits.dtype)
            else:
                logits = shared[i]
                if s == 1 and self.share is not None:
                    logits = self._transform(logits, self.share)
            logits_out.append(logits)
            vs = self._heads(_phase_windows(v[..., part], s, ws))
            out = torch.softmax(logits, dim=-1).to(vs.dtype) @ vs  # (B', s*s, heads, N, d)
            out = out.transpose(2, 3).reshape(out.shape[0], s * s, ws * ws, chunk)
            outs.append(_phase_merge(out, s, ws, b, h, w))
        return self.proj(torch.cat(outs, dim=-1)), logits_out


# --------------------------------------------------------------------------------------------------------------
# Blocks, groups, network.


class MSTBlock(nn.Module):
    """Multi-scale shared Transformer block: x + GA(CSA(LN(x))), then x + FFN(LN(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        scales: Sequence[int],
        computes: bool,
        share_kernel: int | None,
        ga_hidden: int | None,
        ms_kernels: Sequence[int],
        deploy: bool,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CrossScaleAttention(dim, num_heads, window_size, scales, computes, share_kernel)
        self.ga = ChannelAttention(dim, ga_hidden) if ga_hidden else None
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = ConvFFN(dim, int(dim * mlp_ratio), ms_kernels, deploy)

    def forward(self, x: Tensor, shared: list[Tensor] | None) -> tuple[Tensor, list[Tensor]]:
        a, logits = self.attn(self.norm1(x), shared)
        if self.ga is not None:
            a = self.ga(a)
        x = x + a
        return x + self.ffn(self.norm2(x)), logits


class MSRGroup(nn.Module):
    """A group of blocks (the first computes the similarity, the others share it), a 3x3 conv and a residual."""

    def __init__(self, depth: int, dim: int, share_attn: bool, **block: object) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            MSTBlock(dim, computes=(j == 0 or not share_attn), **block)  # type: ignore[arg-type]
            for j in range(depth)
        )
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        y, shared = x, None
        for block in self.blocks:
            y, shared = block(y, shared)
        y = self.conv(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + y


def _classical_upsample(scale: int, feat: int) -> nn.Sequential:
    """Conv + PixelShuffle stages (x2 twice for x4), SwinIR's 'pixelshuffle' upsampler."""
    layers: list[nn.Module] = []
    if scale in (2, 4):
        for _ in range(int(math.log2(scale))):
            layers += [nn.Conv2d(feat, 4 * feat, 3, padding=1), nn.PixelShuffle(2)]
    elif scale == 3:
        layers += [nn.Conv2d(feat, 9 * feat, 3, padding=1), nn.PixelShuffle(3)]
    else:
        raise ValueError(f"unsupported scale {scale} (2, 3 or 4)")
    return nn.Sequential(*layers)


class MSRASR(nn.Module):
    """MSRA-SR (our PyTorch reading of the ICCV 2023 paper). Input and output RGB in [0, 1], any size.

    Args:
        scale: upscaling factor (2, 3 or 4).
        embed_dim: channels C (60 lightweight, 192 classical).
        depths: blocks per group (4, 4, 4, 4) lightweight, six 4s classical.
        num_heads: attention heads, split evenly over ``scales``.
        window_size: attention window on each (downscaled) map.
        mlp_ratio: FFN hidden width / C.
        upsampler: ``"pixelshuffledirect"`` (one conv C -> 3 s^2, lightweight) or ``"pixelshuffle"``
            (conv C -> 64, LeakyReLU, conv + PixelShuffle stages, conv 64 -> 3; classical).
        scales: CSA scale factors; ``(1,)`` turns cross-scale attention off (plain window attention).
        share_attn: shared self-attention; False computes the similarity in every layer.
        share_kernel: size of F's depthwise kernel; ``None`` makes F the identity.
        global_attn: channel attention after the attention branch.
        ga_hidden: hidden width of the channel-attention MLP (default C).
        ms_kernels: kernel sizes of the MS-DWC; ``()`` drops it, ``(7,)`` is a single 7x7 DWC.
        deploy: build the MS-DWC in its folded (inference) form, the form checkpoints are saved in.
    """

    def __init__(
        self,
        scale: int = 4,
        embed_dim: int = 60,
        depths: Sequence[int] = (4, 4, 4, 4),
        num_heads: int = 6,
        window_size: int = 16,
        mlp_ratio: float = 2.0,
        upsampler: str = "pixelshuffledirect",
        scales: Sequence[int] = (1, 2, 4),
        share_attn: bool = True,
        share_kernel: int | None = 3,
        global_attn: bool = True,
        ga_hidden: int | None = None,
        ms_kernels: Sequence[int] = (1, 3, 5, 7),
        deploy: bool = False,
        num_feat: int = 64,
    ) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"unsupported scale {scale} (2, 3 or 4)")
        self.scale = scale
        self.upsampler = upsampler
        self.pad_multiple = window_size * max(scales)
        self.register_buffer("mean", torch.tensor(_RGB_MEAN).view(1, 3, 1, 1), persistent=False)

        self.conv_first = nn.Conv2d(3, embed_dim, 3, padding=1)
        self.patch_norm = nn.LayerNorm(embed_dim)
        block = dict(
            num_heads=num_heads,
            window_size=window_size,
            mlp_ratio=mlp_ratio,
            scales=tuple(scales),
            share_kernel=share_kernel,
            ga_hidden=(ga_hidden or embed_dim) if global_attn else None,
            ms_kernels=tuple(ms_kernels),
            deploy=deploy,
        )
        self.layers = nn.ModuleList(MSRGroup(d, embed_dim, share_attn, **block) for d in depths)
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, padding=1)
        if upsampler == "pixelshuffledirect":
            self.upsample = nn.Sequential(nn.Conv2d(embed_dim, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))
        elif upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(
                nn.Conv2d(embed_dim, num_feat, 3, padding=1), nn.LeakyReLU(inplace=True)
            )
            self.upsample = _classical_upsample(scale, num_feat)
            self.conv_last = nn.Conv2d(num_feat, 3, 3, padding=1)
        else:
            raise ValueError(f"unknown upsampler {upsampler!r}")
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # -- forms ---------------------------------------------------------------------------------------------

    @property
    def deploy(self) -> bool:
        """True when every MS-DWC is in its folded single-kernel form."""
        return all(m.deploy for m in self.modules() if isinstance(m, MultiScaleDWConv))

    def reparameterize(self) -> MSRASR:
        """Fold every MS-DWC into one depthwise conv, in place (the same function; faster inference)."""
        for m in self.modules():
            if isinstance(m, MultiScaleDWConv):
                m.reparameterize()
        return self

    def deploy_state_dict(self) -> dict[str, Tensor]:
        """The state dict in deploy form, the form checkpoints are saved in (the module is not changed)."""
        return fold_state_dict(self.state_dict())

    def adapt_state_dict(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Make ``state`` fit this module: fold a training-form dict into a deploy-form module, or switch a
        training-form module to deploy form for a deploy-form dict (a folded kernel cannot be split again)."""
        has_branches = any(_BRANCH_KEY in k for k in state)
        has_reparam = any(_REPARAM_KEY in k for k in state)
        if has_branches and self.deploy:
            return fold_state_dict(state)
        if has_reparam and not self.deploy:
            self.reparameterize()
        return dict(state)

    def load_state_dict(self, state_dict: Mapping[str, Tensor], strict: bool = True, assign: bool = False):  # noqa: ANN201
        """``nn.Module.load_state_dict`` that accepts both the training and the deploy form."""
        return super().load_state_dict(self.adapt_state_dict(state_dict), strict=strict, assign=assign)

    # -- forward -------------------------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        m = self.pad_multiple
        x = pad_reflect(x, -h % m, -w % m)
        x = x - self.mean.to(x.dtype)
        feat = self.conv_first(x)
        t = self.patch_norm(feat.permute(0, 2, 3, 1))
        for group in self.layers:
            t = group(t)
        t = self.norm(t).permute(0, 3, 1, 2)
        body = self.conv_after_body(t) + feat
        if self.upsampler == "pixelshuffledirect":
            out = self.upsample(body)
        else:
            out = self.conv_last(self.upsample(self.conv_before_upsample(body)))
        out = out + self.mean.to(out.dtype)
        return out[..., : h * self.scale, : w * self.scale]
