"""RGT / RGT-S: Recursive Generalization Transformer (Chen et al., ICLR 2024).

Written from research/architectures.md §1 and the paper. Module and buffer names follow the authors'
checkpoints (``{'params': state_dict}``), so they load with ``strict=True``: RGT is 8 residual groups of
6 blocks, RGT-S 6 x 6. Inside a group, even blocks are L-SA (two-branch 8x32 / 32x8 rectangle-window
attention with a dynamic position bias) and odd blocks are RG-SA (cross-attention to a recursively
pooled map); every block adds ``gamma * input`` (HAI). Input and output are RGB in [0, 1].

Behaviours kept from the reference code (they change outputs):

* RG-SA's recursion depth ``T`` uses a different formula in eval and in training (``recursion_depth``);
  run inference with ``model.eval()``.
* L-SA zero-pads q/k/v *after* the projection to multiples of 32; padded tokens are not masked in
  unshifted windows.
* Shifted L-SA blocks use the stored ``attn_mask_*`` buffers when the padded size is ``img_size`` x
  ``img_size`` (64 x 64) and masks recomputed for the padded size otherwise.
* RG-SA scales logits by ``(head_dim * c_ratio) ** -0.5`` per head.

Departures; on inputs the reference accepts, outputs match it to fp32 rounding (the goldens' tolerance):

* **Small or elongated inputs work.** The reference fails when a side is under 16 px (``log(0)``) or
  when the short side is under ``4 ** T`` (the recursion pools it to nothing, e.g. 20 x 1100). Here the
  input is mirror-padded at the bottom/right up to the smallest size that works (``safe_input_size``)
  and the output is cropped back to ``scale * H x scale * W``. Sizes the reference accepts are not
  padded, so their outputs are unchanged.
* **Half precision works** (``model.half()``, bf16, or autocast): biases and masks are built in fp32 and
  cast to the activation dtype, LayerNorms and the position-bias MLP run in fp32, and attention runs
  through ``scaled_dot_product_attention`` (softmax accumulated in fp32).
* **Speed and memory.** In eval with autograd off, the position-bias tables (the MLP output, gathered
  by ``relative_position_index``) are cached per device and dtype and recomputed when a weight changes
  or the module is switched to training; window gather/scatter indices are cached per shape. Shifted
  windows at sizes other than 64 x 64 never materialise a per-window mask: only the windows on the last
  window row and column see the shift boundary, so those are re-run with one of three (N, N) masks.
* **fp32 on the CPU** (eager, autograd off; ``_cpu_fast_path``): the linear layers run through oneDNN with
  their bias, GELU and residual additions fused, both L-SA branches share one window gather and scatter,
  the MLP's gate product and the residual groups' additions are fused into their convolutions, and RG-SA
  folds its query and output projections into the pooled keys and values when there are few of them.
  Same functions, other fp32 rounding (outputs move by ~1e-6).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: DIV2K RGB mean subtracted from the input (and added back to the output).
RGB_MEAN = (0.4488, 0.4371, 0.4040)
#: The reference needs H // 16 >= 1 and W // 16 >= 1 in eval mode.
MIN_SIDE = 16
#: Value of masked logits in shifted windows (Swin convention; kept for identical outputs).
_MASK_VALUE = -100.0


# --------------------------------------------------------------------------------------------------
# Shape rules
# --------------------------------------------------------------------------------------------------


def _floor_log4(n: int) -> int:
    """floor(log4(n)) for n >= 1, exactly (matches ``int(math.log(n, 4))``, checked to 2e6)."""
    return (n.bit_length() - 1) // 2


def recursion_depth(h: int, w: int, training: bool) -> int:
    """How many times RG-SA applies its stride-4 reduction to an ``h x w`` map.

    Eval: ``max(floor(log4(h // 16)), floor(log4(w // 16)), 2)``; training: the same over ``// 4``
    without the floor of 2 (the authors' test-time setting differs from training).
    """
    if training:
        return max(_floor_log4(max(h // 4, 1)), _floor_log4(max(w // 4, 1)))
    return max(_floor_log4(max(h // 16, 1)), _floor_log4(max(w // 16, 1)), 2)


def safe_input_size(h: int, w: int, training: bool = False) -> tuple[int, int]:
    """The smallest size >= (h, w) that the network can run: both sides >= 16 and >= 4 ** T.

    Padding the short side up to ``4 ** T`` never changes ``T`` (it stays <= the long side's term).
    """
    hp, wp = max(h, MIN_SIDE), max(w, MIN_SIDE)
    need = 4 ** recursion_depth(hp, wp, training)
    return max(hp, need), max(wp, need)


def _mirror_pad(x: Tensor, ph: int, pw: int) -> Tensor:
    """Pad bottom/right by ``ph`` / ``pw`` mirroring the image, repeatedly if the pad exceeds it."""
    while ph > 0 or pw > 0:
        h, w = x.shape[-2:]
        sh, sw = min(ph, h - 1), min(pw, w - 1)
        if (ph > 0 and sh == 0) or (pw > 0 and sw == 0):  # a 1-pixel side cannot be reflected
            return F.pad(x, (0, pw, 0, ph), mode="replicate")
        x = F.pad(x, (0, sw, 0, sh), mode="reflect")
        ph, pw = ph - sh, pw - sw
    return x


# --------------------------------------------------------------------------------------------------
# Buffers and shape-dependent constants
# --------------------------------------------------------------------------------------------------


def rpe_biases(hs: int, ws: int) -> Tensor:
    """Every relative offset (dh, dw) of an ``hs x ws`` window, dh-major: ((2hs-1)(2ws-1), 2) float32."""
    dh = torch.arange(1 - hs, hs)
    dw = torch.arange(1 - ws, ws)
    grid = torch.stack(torch.meshgrid(dh, dw, indexing="ij"))
    return grid.flatten(1).transpose(0, 1).contiguous().float()


def relative_position_index(hs: int, ws: int) -> Tensor:
    """Row of ``rpe_biases`` for each token pair (p, q) of a window, offset pos(p) - pos(q): (N, N) int64."""
    coords = torch.stack(torch.meshgrid(torch.arange(hs), torch.arange(ws), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]
    return ((rel[0] + hs - 1) * (2 * ws - 1) + (rel[1] + ws - 1)).contiguous()


def shift_window_mask(hp: int, wp: int, hs: int, ws: int) -> Tensor:
    """Swin-style mask of a (hp, wp) map cyclically shifted by half a window: (nW, N, N) float32.

    The map is labelled with 9 regions (3 bands per axis cut at the last window and half window);
    a token pair from different regions gets ``-100``, else 0.
    """
    labels = torch.zeros(hp, wp)
    region = 0
    for rows in (slice(0, -hs), slice(-hs, -hs // 2), slice(-hs // 2, None)):
        for cols in (slice(0, -ws), slice(-ws, -ws // 2), slice(-ws // 2, None)):
            labels[rows, cols] = region
            region += 1
    windows = labels.view(hp // hs, hs, wp // ws, ws).permute(0, 2, 1, 3).reshape(-1, hs * ws)
    differs = windows[:, None, :] != windows[:, :, None]
    return torch.where(differs, _MASK_VALUE, 0.0).to(torch.float32)


@lru_cache(maxsize=16)
def _border_masks(hs: int, ws: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The three distinct masks of a shifted window grid, (3, N, N): last column, last row, corner.

    Interior windows lie inside one region, so their mask is all zero; the masks of border windows
    do not depend on the map size. Read off a 2 x 2 window grid.
    """
    with torch.inference_mode(False), torch.no_grad():
        masks = shift_window_mask(2 * hs, 2 * ws, hs, ws)
        assert not masks[0].any(), "interior shifted window must be unmasked"
        return masks[1:].to(device=device, dtype=dtype)


class WindowPlan(NamedTuple):
    """Gather / scatter indices of one L-SA branch at one token-map size (see ``_window_plan``)."""

    gather: Tensor  # (K*N,) map row of each window token; h*w = the appended zero token (padding)
    scatter: Tensor  # (h*w,) window-token row of each map token: undoes the shift, crops the padding
    kept: Tensor  # (K,) grid numbers of the windows that hold at least one real query
    border: tuple[Tensor, Tensor, Tensor]  # positions in ``kept`` on the last column / last row / corner
    num_windows: int  # windows in the whole padded grid


class BranchConstants(NamedTuple):
    """What one L-SA branch needs at one input size, prepared before the traced part of ``forward``."""

    plan: WindowPlan
    bias: Tensor  # (heads, N, N) position bias, or (K, heads, N, N) with the stored shift masks added
    border_masks: Tensor | None  # (3, N, N) masks of the shift boundary's windows, where they are re-run


#: Per L-SA module (indexed by ``LSA.slot``): its branches' constants for one input size.
ShapeConstants = list[tuple[BranchConstants, ...]]


@lru_cache(maxsize=16)
def _window_plan(h: int, w: int, hs: int, ws: int, shifted: bool, device: torch.device) -> WindowPlan:
    """Index plan of one L-SA branch for an ``h x w`` token map, padded to multiples of 32.

    Windows are numbered row-major over the padded grid and their tokens row-major; when ``shifted`` the
    map is first rolled by minus half a window (``torch.roll`` semantics). Windows whose queries all
    fall in the padding are dropped: their outputs would be cropped away, and each window's keys are
    its own, so the kept windows' outputs are unchanged. Gather / scatter indices are int32 (half the
    memory of int64; a 2048 x 2048 map needs 2 x 16 MB per plan), border positions int64 (index_copy_).
    """
    with torch.inference_mode(False), torch.no_grad():
        hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
        nwh, nww = hp // hs, wp // ws
        sh, sw = (hs // 2, ws // 2) if shifted else (0, 0)
        # Map token (i, j) sits at rolled position (i - shift, j - shift).
        i = (torch.arange(h).view(h, 1) - sh) % hp
        j = (torch.arange(w).view(1, w) - sw) % wp
        window = (i // hs) * nww + (j // ws)
        kept = torch.unique(window)
        compact = torch.full((nwh * nww,), -1, dtype=torch.long)
        compact[kept] = torch.arange(kept.numel())
        scatter = (compact[window] * (hs * ws) + (i % hs) * ws + (j % ws)).reshape(-1)
        # Rolled position (r, c) holds map token (r + shift, c + shift); beyond (h, w) it is padding.
        r = (kept // nww).view(-1, 1, 1) * hs + torch.arange(hs).view(1, hs, 1)
        c = (kept % nww).view(-1, 1, 1) * ws + torch.arange(ws).view(1, 1, ws)
        src_r, src_c = (r + sh) % hp, (c + sw) % wp
        gather = torch.where((src_r < h) & (src_c < w), src_r * w + src_c, h * w).reshape(-1)
        last_r, last_c = kept // nww == nwh - 1, kept % nww == nww - 1
        border = tuple(
            torch.nonzero(m).view(-1).to(device) for m in (last_c & ~last_r, last_r & ~last_c, last_r & last_c)
        )
        i32 = torch.int32
        return WindowPlan(gather.to(device, i32), scatter.to(device, i32), kept.to(device), border, nwh * nww)


def _per_image(rows: Tensor, batch: int, stride: int) -> Tensor:
    """Row numbers ``rows`` of one image, repeated for ``batch`` images of ``stride`` rows each.

    Selecting rows of a 2-D tensor along dim 0 is about 3x faster on the CPU than along dim 1 of (B, R, C).
    """
    if batch == 1:
        return rows
    offsets = torch.arange(batch, device=rows.device, dtype=rows.dtype).view(-1, 1) * stride
    return (offsets + rows.view(1, -1)).reshape(-1)


class PairPlan(NamedTuple):
    """Row indices that run both L-SA branches as one attention call (see ``_pair_plan``)."""

    gather: Tensor  # (K*N*6,) row of qkv viewed as (B, T*6, C/2) for window k, token n, q/k/v j, branch i
    scatter: Tensor  # (h*w*2,) row of the attention output (B, K*N*2, C/2) for map token t, branch i


@lru_cache(maxsize=16)
def _pair_plan(
    h: int, w: int, windows: tuple[tuple[int, int], tuple[int, int]], shifted: bool, device: torch.device
) -> PairPlan | None:
    """Gather / scatter rows that put both branches' windows side by side, or ``None`` when they differ in number.

    The qkv projection's channels are ``[q | k | v]``, each ``[branch 0 | branch 1]``; viewed as rows of ``C/2``
    channels, row ``6t + 2j + i`` holds token ``t``'s q (j = 0), k or v of branch ``i``. Both branches have
    ``N = hs * ws`` tokens per window, so when they also keep the same number ``K`` of windows, window ``k`` of
    branch 0 and window ``k`` of branch 1 can share one batch entry, branch ``i`` as heads ``i*H/2 ..``: one
    gather, one attention call and one scatter replace two of each and the concatenation.
    """
    plans = [_window_plan(h, w, *win, shifted, device) for win in windows]
    if plans[0].kept.numel() != plans[1].kept.numel():
        return None
    with torch.inference_mode(False), torch.no_grad():
        branch = torch.arange(2, device=device)
        src = torch.stack([p.gather.long() for p in plans], dim=-1)  # (K*N, 2): map token of each branch
        gather = (src[:, None, :] * 6 + torch.arange(3, device=device).view(1, 3, 1) * 2 + branch).reshape(-1)
        dst = torch.stack([p.scatter.long() for p in plans], dim=-1)  # (h*w, 2): window token of each branch
        scatter = (dst * 2 + branch).reshape(-1)
        return PairPlan(gather.to(torch.int32), scatter.to(torch.int32))


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------


class LayerNorm32(nn.LayerNorm):
    """``nn.LayerNorm`` (same parameters and keys) that always normalises in fp32 and returns the input dtype.

    Autocast leaves ``layer_norm`` of fp32 tensors in fp32, so no autocast guard is needed.
    """

    def forward(self, x: Tensor) -> Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """A context that turns autocast off on ``device`` (a no-op where autocast does not exist)."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


class ToTokens(nn.Module):
    """(B, C, H, W) -> (B, H*W, C); parameter-free (index 0 of ``before_RG``)."""

    def forward(self, x: Tensor) -> Tensor:
        return _to_tokens(x)


def _to_image(x: Tensor, h: int, w: int) -> Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W), a channels-last view: convolutions then need no transpose copy."""
    return x.reshape(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)


def _to_tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H*W, C); free for channels-last tensors."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


def _sdpa(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, scale: float) -> Tensor:
    """``softmax(q k^T * scale + bias) v`` through ``scaled_dot_product_attention``.

    Fused kernels need one head size for q, k and v (a multiple of 8 on CUDA): zero columns are
    appended where needed (they add nothing to q.k) and cut from the output.
    """
    dim, vdim = q.shape[-1], v.shape[-1]
    size = max(dim, vdim)
    if q.is_cuda:
        size = -(-size // 8) * 8
    if dim != size:
        q, k = F.pad(q, (0, size - dim)), F.pad(k, (0, size - dim))
    if vdim != size:
        v = F.pad(v, (0, size - vdim))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    return out[..., :vdim] if vdim != size else out


# --------------------------------------------------------------------------------------------------
# fp32 CPU inference path
# --------------------------------------------------------------------------------------------------


def _has_onednn_linear() -> bool:
    """Whether this build has oneDNN's fused linear operator (``mkldnn::_linear_pointwise``)."""
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


_ONEDNN_LINEAR = _has_onednn_linear()


def _cpu_fast_path(x: Tensor) -> bool:
    """Whether ``x`` takes the fp32 CPU inference path: eager, autograd and autocast off, oneDNN enabled.

    That path runs the linear layers through oneDNN with the bias, GELU and residual additions fused into the
    matrix product (on the 540-wide qkv projection oneDNN is ~1.4x faster than the default CPU BLAS; the
    fusions save a pass over the activations each), gathers both L-SA branches' windows at once, and folds
    RG-SA's query and output projections into its few pooled keys. It computes the same functions; only the
    fp32 rounding differs (~1e-6 relative). Everything else (autograd, autocast, half precision, other
    devices, ``torch.compile``, oneDNN disabled) takes the plain path.
    """
    return (
        _ONEDNN_LINEAR
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and torch.backends.mkldnn.enabled
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def _dense(
    x: Tensor, weight: Tensor, bias: Tensor | None, *, gelu: bool = False, residual: Tensor | None = None
) -> Tensor:
    """``F.linear(x, weight, bias)`` on the fast path, then exact GELU (``gelu``) or ``+ residual``, fused.

    ``x`` (..., in) fp32 on the CPU; ``residual`` has the output's shape. Only for ``_cpu_fast_path`` inputs.
    """
    x = x.contiguous()
    if residual is not None:
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual.contiguous(), weight, bias, "add")
    if gelu:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "none")
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _conv_then(conv: nn.Conv2d, x: Tensor, other: Tensor, op: str) -> Tensor:
    """``conv(x) + other`` (``op="add"``) or ``conv(x) * other`` (``"mul"``) through oneDNN (fast path only).

    ``x`` and ``other`` are channels-last images; so is the result. The operation is a post-op of the
    convolution where oneDNN fuses it, else applied in place on its output: no extra tensor either way.
    """
    geometry = (conv.padding, conv.stride, conv.dilation, conv.groups)
    fused = torch.ops.mkldnn._convolution_pointwise.binary
    return fused(x, other, conv.weight, conv.bias, *geometry, op, None, None, [], None)


class DynamicPosBias(nn.Module):
    """The position-bias MLP over relative offsets: proj, then 3 x [LN, ReLU, Linear] (no residual)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.pos_proj = nn.Linear(2, dim)
        self.pos1 = nn.Sequential(LayerNorm32(dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))
        self.pos2 = nn.Sequential(LayerNorm32(dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))
        self.pos3 = nn.Sequential(LayerNorm32(dim), nn.ReLU(inplace=True), nn.Linear(dim, num_heads))

    def forward(self, offsets: Tensor) -> Tensor:
        """(R, 2) offsets -> (R, heads) biases, computed in fp32 whatever the weights' dtype."""

        def linear(layer: nn.Linear, x: Tensor) -> Tensor:
            return F.linear(x, layer.weight.float(), layer.bias.float())

        pos = linear(self.pos_proj, offsets.float())
        for stage in (self.pos1, self.pos2, self.pos3):
            norm, lin = stage[0], stage[2]
            pos = linear(lin, F.relu(F.layer_norm(pos, norm.normalized_shape, norm.weight.float(), norm.bias.float())))
        return pos


class WindowBranch(nn.Module):
    """One L-SA branch (``attns.i``): window shape, relative-position buffers and the bias MLP."""

    def __init__(self, dim: int, num_heads: int, window: tuple[int, int]) -> None:
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.register_buffer("rpe_biases", rpe_biases(*window))
        self.register_buffer("relative_position_index", relative_position_index(*window))
        self.pos = DynamicPosBias(dim // 16, num_heads)
        self._cache: dict[tuple, tuple[tuple[int, ...], Tensor]] = {}

    def _weights_version(self) -> tuple[int, ...] | None:
        """Identity of the bias MLP's weights: data_ptr catches replaced tensors, ``_version`` in-place
        updates (load_state_dict, optimisers). ``None`` for inference tensors, which track no version."""
        params = list(self.pos.parameters())
        if any(p.is_inference() for p in params):
            return None
        return tuple(v for p in params for v in (p.data_ptr(), p._version))

    def position_bias(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        """(heads, N, N) bias in ``dtype``; cached in eval when autograd is off."""
        return self._cached((device, dtype), (), lambda: self._compute_bias().to(dtype))

    def masked_bias(
        self, stored: Tensor, plan: WindowPlan, size: tuple[int, int], device: torch.device, dtype: torch.dtype
    ) -> Tensor:
        """(K, heads, N, N): the position bias plus each kept window's ``stored`` shift mask; cached like
        ``position_bias`` for the last map size seen (one entry per device and dtype, so memory stays bounded),
        and recomputed when the mask buffer changes."""

        def compute() -> Tensor:
            masks = stored if plan.kept.numel() == plan.num_windows else stored.index_select(0, plan.kept)
            return self.position_bias(device, dtype).unsqueeze(0) + masks.to(device, dtype).unsqueeze(1)

        buffer_version = () if stored.is_inference() else (stored.data_ptr(), stored._version)
        return self._cached(("masked", device, dtype), (*size, *buffer_version), compute)

    def _cached(self, key: tuple, extra_version: tuple, compute: Callable[[], Tensor]) -> Tensor:
        """``compute()``, kept under ``key`` while the bias MLP's weights (and ``extra_version``) are unchanged;
        computed afresh in training or with autograd on, where the result must carry gradients."""
        version = None if self.training or torch.is_grad_enabled() else self._weights_version()
        if version is None:
            return compute()
        version += extra_version
        hit = self._cache.get(key)
        if hit is None or hit[0] != version:
            # A normal (not inference-mode) tensor, so it stays usable outside inference_mode.
            with torch.inference_mode(False), torch.no_grad():
                hit = (version, compute())
            self._cache[key] = hit
        return hit[1]

    def _compute_bias(self) -> Tensor:
        n = self.window[0] * self.window[1]
        with _no_autocast(self.rpe_biases.device):
            table = self.pos(self.rpe_biases)
        bias = table[self.relative_position_index.view(-1)].view(n, n, self.num_heads)
        return bias.permute(2, 0, 1).contiguous()

    def clear_cache(self) -> None:
        """Forget cached bias tables (called when the module changes mode)."""
        self._cache.clear()


class LSA(nn.Module):
    """Local self-attention: 8x32 windows on the first half of the channels, 32x8 on the second."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        split_size: tuple[int, int],
        shift: bool,
        img_size: int,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.shift = shift
        self.img_size = img_size
        self.slot = -1  # position in the model's ShapeConstants, set by RGT
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        windows = ((split_size[0], split_size[1]), (split_size[1], split_size[0]))
        self.attns = nn.ModuleList(WindowBranch(dim // 2, num_heads // 2, win) for win in windows)
        if shift:
            # Stored in the checkpoints for a 64 x 64 padded map; used only at exactly that size.
            for i, (hs, ws) in enumerate(windows):
                self.register_buffer(f"attn_mask_{i}", shift_window_mask(img_size, img_size, hs, ws))
        self.get_v = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def constants(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> tuple[BranchConstants, ...]:
        """Index plans and position biases of both branches for an ``h x w`` token map, activations in ``dtype``.

        Shape-dependent and data-independent: ``RGT.forward`` prepares them outside ``torch.compile``'s trace,
        so the traced graph holds only tensor arithmetic (no caches, ``unique`` or Python-side bookkeeping).
        """
        hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
        out = []
        for i, branch in enumerate(self.attns):
            plan = _window_plan(h, w, *branch.window, self.shift, device)
            border = None
            if self.shift and (hp, wp) == (self.img_size, self.img_size):
                bias = branch.masked_bias(getattr(self, f"attn_mask_{i}"), plan, (h, w), device, dtype)
            else:
                bias = branch.position_bias(device, dtype)
                if self.shift:
                    border = _border_masks(*branch.window, device, dtype)
            out.append(BranchConstants(plan, bias, border))
        return tuple(out)

    def forward(
        self,
        x: Tensor,
        size: tuple[int, int],
        constants: tuple[BranchConstants, ...] | None = None,
        residual: Tensor | None = None,
    ) -> Tensor:
        """(B, h*w, C) tokens of an ``h x w`` map -> (B, h*w, C), plus ``residual`` when given."""
        if _cpu_fast_path(x):
            return self._forward_fast(x, size, constants, residual)
        h, w = size
        b, n, c = x.shape
        hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
        padded = (hp, wp) != (h, w)
        if padded:
            # One extra token, zeroed after the projection, stands for every padded position: the
            # reference zero-pads q/k/v after qkv (so padding is 0, not the bias). Padding the input
            # costs a third of padding qkv.
            x = F.pad(x, (0, 0, 0, 1))
        qkv = self.qkv(x)  # (B, N[+1], 3C): [q | k | v]
        if padded:
            qkv[:, n] = 0
        if constants is None:
            constants = self.constants(h, w, qkv.device, qkv.dtype)
        lcm = _to_tokens(self.get_v(_to_image(qkv[:, :n, 2 * c :], h, w)))
        src = qkv.view(b, qkv.shape[1], 3, 2, c // 2)
        outs = [self._branch(i, src[:, :, :, i], constants[i]) for i in range(2)]
        out = torch.cat(outs, dim=-1)
        out += lcm
        out = self.proj(out)
        return out if residual is None else residual + out

    def _forward_fast(
        self,
        x: Tensor,
        size: tuple[int, int],
        constants: tuple[BranchConstants, ...] | None,
        residual: Tensor | None,
    ) -> Tensor:
        """``forward`` on the fp32 CPU path: oneDNN projections, both branches in one attention call."""
        h, w = size
        b, n, c = x.shape
        padded = (-(-h // 32) * 32, -(-w // 32) * 32) != (h, w)
        if padded:
            x = F.pad(x, (0, 0, 0, 1))  # the zero token, as in ``forward``
        qkv = _dense(x, self.qkv.weight, self.qkv.bias)
        if padded:
            qkv[:, n] = 0
        if constants is None:
            constants = self.constants(h, w, qkv.device, qkv.dtype)
        windows = (self.attns[0].window, self.attns[1].window)
        pair = _pair_plan(h, w, windows, self.shift, qkv.device)
        if pair is None:  # the branches keep different numbers of windows: one call each
            src = qkv.view(b, qkv.shape[1], 3, 2, c // 2)
            out = torch.cat([self._branch(i, src[:, :, :, i], constants[i]) for i in range(2)], dim=-1)
        else:
            out = self._pair_attention(qkv, pair, constants, n)
        # attention + get_v(v), the addition fused into the convolution
        out = _to_tokens(_conv_then(self.get_v, _to_image(qkv[:, :n, 2 * c :], h, w), _to_image(out, h, w), "add"))
        return _dense(out, self.proj.weight, self.proj.bias, residual=residual)

    def _pair_attention(self, qkv: Tensor, pair: PairPlan, constants: tuple[BranchConstants, ...], n: int) -> Tensor:
        """Both branches' window attention on one gathered tensor (``_pair_plan``): (B, T, 3C) -> (B, n, C).

        With the position biases (unshifted, or shifted with the boundary windows re-run) both branches run as
        one attention call over all heads. With the stored shift masks (one bias per window and branch) each
        branch runs on its heads: pairing those biases would need a second (K, heads, N, N) table per module.
        """
        b, _, c3 = qkv.shape
        c = c3 // 3
        first: WindowBranch = self.attns[0]
        half, hd = first.num_heads, first.head_dim
        heads, tokens = 2 * half, first.window[0] * first.window[1]
        gather = _per_image(pair.gather, b, qkv.shape[1] * 6)  # 6 rows of C/2 channels per token
        win = qkv.view(-1, c // 2).index_select(0, gather).view(-1, tokens, 3, heads, hd)
        q, k, v = (win[:, :, j].transpose(1, 2) for j in range(3))  # (B*K, heads, N, hd) views
        if constants[0].bias.dim() == 4:
            outs = []
            for i, const in enumerate(constants):
                bias, part = const.bias, slice(i * half, (i + 1) * half)
                if b > 1:  # one bias per window, repeated per image
                    bias = bias.expand(b, -1, -1, -1, -1).reshape(-1, *bias.shape[1:])
                out = F.scaled_dot_product_attention(
                    q[:, part], k[:, part], v[:, part], attn_mask=bias, scale=first.scale
                )
                outs.append(out.transpose(1, 2))
            rows = torch.cat(outs, dim=2).view(-1, c // 2)  # (B*K*N*2, C/2): (window token, branch)
        else:
            bias = torch.cat([constants[0].bias, constants[1].bias]).unsqueeze(0)  # (1, heads, N, N)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=first.scale)
            if self.shift:
                nk = out.shape[0] // b
                for i, const in enumerate(constants):
                    assert const.border_masks is not None
                    part = slice(i * half, (i + 1) * half)
                    masks, border = const.border_masks, const.plan.border
                    self._redo_border(out[:, part], win[:, :, :, part], const.bias, masks, border, nk, first.scale)
            rows = out.transpose(1, 2).reshape(-1, c // 2)  # (B*K*N*2, C/2): (window token, branch)
        return rows.index_select(0, _per_image(pair.scatter, b, rows.shape[0] // b)).view(b, n, c)

    def _branch(self, i: int, src: Tensor, const: BranchConstants) -> Tensor:
        """Window attention of branch ``i`` on ``src`` (B, h*w[+1], 3, C/2) -> (B, h*w, C/2)."""
        branch: WindowBranch = self.attns[i]
        hs, ws = branch.window
        heads, hd = branch.num_heads, branch.head_dim
        b, n = src.shape[0], hs * ws
        plan = const.plan
        nk = plan.kept.numel()
        win = src.index_select(1, plan.gather).view(b * nk, n, 3, heads, hd)
        q, k, v = (win[:, :, j].transpose(1, 2) for j in range(3))  # (B*K, heads, N, hd) views
        if const.bias.dim() == 4:  # shifted at the stored masks' size: one bias per window
            bias = const.bias
            if b > 1:
                bias = bias.expand(b, -1, -1, -1, -1).reshape(b * nk, heads, n, n)
            out = _sdpa(q, k, v, bias, branch.scale)
        else:
            out = _sdpa(q, k, v, const.bias.unsqueeze(0), branch.scale)
            if self.shift:
                assert const.border_masks is not None
                out = self._redo_border(out, win, const.bias, const.border_masks, plan.border, nk, branch.scale)
        out = out.transpose(1, 2).reshape(b, nk * n, heads * hd)
        return out.index_select(1, plan.scatter)

    @staticmethod
    def _redo_border(
        out: Tensor, win: Tensor, pos: Tensor, masks: Tensor, border: tuple[Tensor, ...], nk: int, scale: float
    ) -> Tensor:
        """Re-run the windows on the shift boundary (last column / last row / corner) with their ``masks``."""
        b = out.shape[0] // nk
        offsets = torch.arange(b, device=out.device).view(b, 1) * nk
        for mask, windows in zip(masks, border, strict=True):
            if windows.numel() == 0:
                continue
            rows = (offsets + windows.view(1, -1)).reshape(-1)
            sel = win.index_select(0, rows)
            q, k, v = (sel[:, :, j].transpose(1, 2) for j in range(3))
            redone = _sdpa(q, k, v, (pos + mask).unsqueeze(0), scale)
            out = out.index_copy(0, rows, redone) if torch.is_grad_enabled() else out.index_copy_(0, rows, redone)
        return out


class RGSA(nn.Module):
    """Recursive-generalization self-attention: cross-attention from every token to a pooled map."""

    def __init__(self, dim: int, num_heads: int, c_ratio: float = 0.5, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.cr = int(dim * c_ratio)
        # Per-head scale of the code (the paper writes 1/sqrt(Cr)).
        self.scale = (dim // num_heads * c_ratio) ** -0.5
        self.reduction1 = nn.Conv2d(dim, dim, 4, stride=4, groups=dim)
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.conv = nn.Conv2d(dim, self.cr, 1)
        self.norm_act = nn.Sequential(LayerNorm32(self.cr), nn.GELU())
        self.q = nn.Linear(dim, self.cr, bias=qkv_bias)
        self.k = nn.Linear(self.cr, self.cr, bias=qkv_bias)
        self.v = nn.Linear(self.cr, dim, bias=qkv_bias)
        self.cpe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.proj = nn.Linear(dim, dim)

    def _pooled(self, x: Tensor, size: tuple[int, int]) -> tuple[Tensor, int, int]:
        """The recursive reduction of the ``h x w`` token map: (B, h'*w', Cr) normalised tokens, h', w'."""
        h, w = size
        pooled = _to_image(x, h, w)
        for _ in range(recursion_depth(h, w, self.training)):
            pooled = self.reduction1(pooled)
        pooled = self.conv(self.dwconv(pooled))
        ph, pw = pooled.shape[-2:]
        return self.norm_act(_to_tokens(pooled)), ph, pw

    def forward(
        self, x: Tensor, size: tuple[int, int], constants: object = None, residual: Tensor | None = None
    ) -> Tensor:
        """(B, h*w, C) -> (B, h*w, C), plus ``residual`` when given. ``constants`` is accepted for a uniform
        block interface and ignored (RG-SA has no shape tables)."""
        if _cpu_fast_path(x):
            return self._forward_fast(x, size, residual)
        b, n, c = x.shape
        heads = self.num_heads
        rep, ph, pw = self._pooled(x, size)
        q = self.q(x).view(b, n, heads, -1).transpose(1, 2)
        k = self.k(rep).view(b, ph * pw, heads, -1).transpose(1, 2)
        v = self.v(rep)  # (B, h'w', C); channel = head * head_dim + d
        v = v + _to_tokens(self.cpe(_to_image(v, ph, pw)))
        v = v.view(b, ph * pw, heads, -1).transpose(1, 2)
        out = _sdpa(q, k, v, None, self.scale)
        out = self.proj(out.transpose(1, 2).reshape(b, n, c))
        return out if residual is None else residual + out

    def _forward_fast(self, x: Tensor, size: tuple[int, int], residual: Tensor | None) -> Tensor:
        """``forward`` on the fp32 CPU path.

        With ``L`` pooled keys per head and ``heads * L <= C`` (e.g. 16 keys at 64 x 64), the projections are
        folded into the keys and values: the logits are ``x @ (k_h W_q,h)^T * scale`` (one product with
        ``heads * L`` outputs instead of ``q = x W_q`` then ``q k^T``), and the output is ``P @ (v_h W_proj,h^T)``
        (one product of depth ``heads * L`` instead of ``P v`` then the C x C projection).
        """
        b, n, c = x.shape
        heads = self.num_heads
        rep, ph, pw = self._pooled(x, size)
        keys = ph * pw
        k = _dense(rep, self.k.weight, self.k.bias)  # (B, L, Cr); channel = head * Cr/heads + d
        v = _dense(rep, self.v.weight, self.v.bias)  # (B, L, C); channel = head * C/heads + e
        v = v + _to_tokens(self.cpe(_to_image(v, ph, pw)))
        if b > 1 or heads * keys > c:
            q = _dense(x, self.q.weight, self.q.bias).view(b, n, heads, -1).transpose(1, 2)
            kh = k.view(b, keys, heads, -1).transpose(1, 2)
            vh = v.view(b, keys, heads, -1).transpose(1, 2)
            out = _sdpa(q, kh, vh, None, self.scale).transpose(1, 2).reshape(b, n, c)
            return _dense(out, self.proj.weight, self.proj.bias, residual=residual)
        ks = (k[0] * self.scale).view(keys, heads, -1)  # (L, heads, d)
        wq = self.q.weight.view(heads, -1, c)  # (heads, d, C)
        logit_w = torch.einsum("lhd,hdc->hlc", ks, wq).reshape(heads * keys, c)
        logit_b = None
        if self.q.bias is not None:
            logit_b = torch.einsum("lhd,hd->hl", ks, self.q.bias.view(heads, -1)).reshape(heads * keys)
        logits = _dense(x, logit_w, logit_b)  # (1, n, heads * L)
        attn = torch.softmax(logits.view(b, n, heads, keys), dim=-1).view(b, n, heads * keys)
        vh = v[0].view(keys, heads, -1)  # (L, heads, e)
        out_w = torch.einsum("lhe,che->chl", vh, self.proj.weight.view(c, heads, -1)).reshape(c, heads * keys)
        return _dense(attn, out_w, self.proj.bias, residual=residual)


class SpatialGate(nn.Module):
    """Gate of the MLP: LayerNorm then a depthwise 3x3 conv in image layout."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = LayerNorm32(dim)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return _to_tokens(self.conv(_to_image(self.norm(x), *size)))


class GatedMLP(nn.Module):
    """fc1 -> GELU -> split in halves a, g -> fc2(a * gate(g))."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.sg = SpatialGate(hidden // 2)
        self.fc2 = nn.Linear(hidden // 2, dim)

    def forward(self, x: Tensor, size: tuple[int, int], residual: Tensor | None = None) -> Tensor:
        """(B, h*w, C) -> (B, h*w, C), plus ``residual`` when given."""
        if _cpu_fast_path(x):
            # fc1 as two products (one per half, GELU fused), so the gate's LayerNorm reads a dense tensor.
            half = self.fc2.in_features
            w1, b1 = self.fc1.weight, self.fc1.bias
            a = _dense(x, w1[:half], b1[:half], gelu=True)
            g = _dense(x, w1[half:], b1[half:], gelu=True)
            sg = self.sg
            gated = _conv_then(sg.conv, _to_image(sg.norm(g), *size), _to_image(a, *size), "mul")  # a * gate(g)
            return _dense(_to_tokens(gated), self.fc2.weight, self.fc2.bias, residual=residual)
        a, g = self.act(self.fc1(x)).chunk(2, dim=-1)
        out = self.fc2(a * self.sg(g, size))
        return out if residual is None else residual + out


class Block(nn.Module):
    """Transformer block with hybrid adaptive integration: ``u + gamma * input``."""

    def __init__(self, attn: nn.Module, dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-4))
        self.norm1 = LayerNorm32(dim)
        self.attn = attn
        self.mlp = GatedMLP(dim, int(dim * mlp_ratio))
        self.norm2 = LayerNorm32(dim)

    def forward(self, x: Tensor, size: tuple[int, int], constants: tuple[BranchConstants, ...] | None = None) -> Tensor:
        if _cpu_fast_path(x):  # residual additions fused into the projections
            u = self.attn(self.norm1(x), size, constants, residual=x)
            u = self.mlp(self.norm2(u), size, residual=u)
            return torch.addcmul(u, x, self.gamma)
        u = x + self.attn(self.norm1(x), size, constants)
        u = u + self.mlp(self.norm2(u), size)
        return u + x * self.gamma


def _is_shifted(group: int, block: int) -> bool:
    """The authors' shift schedule: block 2 of even groups, blocks 0 and 4 of odd groups (L-SA only)."""
    if group % 2 == 0:
        return block > 0 and (block - 2) % 4 == 0
    return block % 4 == 0


class ResidualGroup(nn.Module):
    """Alternating L-SA / RG-SA blocks, a 3x3 conv, and a residual connection."""

    def __init__(
        self,
        group: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        split_size: tuple[int, int],
        c_ratio: float,
        img_size: int,
        qkv_bias: bool,
    ) -> None:
        super().__init__()
        blocks = []
        for i in range(depth):
            if i % 2 == 0:
                attn: nn.Module = LSA(dim, num_heads, split_size, _is_shifted(group, i), img_size, qkv_bias)
            else:
                attn = RGSA(dim, num_heads, c_ratio, qkv_bias)
            blocks.append(Block(attn, dim, mlp_ratio))
        self.blocks = nn.ModuleList(blocks)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int], constants: ShapeConstants | None = None) -> Tensor:
        """``constants``: the model's ``shape_constants`` (computed here per block when ``None``)."""
        res = x
        for blk in self.blocks:
            attn = blk.attn
            x = blk(x, size, constants[attn.slot] if constants is not None and isinstance(attn, LSA) else None)
        if _cpu_fast_path(x):
            return _to_tokens(_conv_then(self.conv, _to_image(x, *size), _to_image(res, *size), "add"))
        x = _to_tokens(self.conv(_to_image(x, *size)))
        return x + res


def _upsampler(scale: int, feats: int) -> nn.Sequential:
    """conv + PixelShuffle stages: one x2 (x2), two x2 (x4) or one x3 (x3)."""
    if scale & (scale - 1) == 0:
        layers: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            layers += [nn.Conv2d(feats, 4 * feats, 3, padding=1), nn.PixelShuffle(2)]
        return nn.Sequential(*layers)
    if scale == 3:
        return nn.Sequential(nn.Conv2d(feats, 9 * feats, 3, padding=1), nn.PixelShuffle(3))
    raise ValueError(f"RGT supports scales 2^n and 3, got {scale}")


_F = TypeVar("_F", bound=Callable[..., object])


def _eager_under_compile(fn: _F) -> _F:
    """``torch.compiler.disable(fn)``, applied only once ``torch.compile`` traces a call of ``fn``.

    ``torch.compiler.disable`` imports ``torch._dynamo`` (hundreds of modules, ~150 MiB) when it runs, so
    as a plain decorator it would load the compiler into every process that merely imports this module.
    Eager calls (``torch.compiler.is_compiling()`` false, which needs no compiler) run ``fn`` directly;
    under tracing the wrapper makes the disabled function once and calls it, and ``torch.compile`` stops
    there exactly as with the plain decorator (the traced network stays one graph, the returned tensors
    entering it as inputs).
    """
    disabled: list[Callable[..., object]] = []

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        if not torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        if not disabled:
            disabled.append(torch.compiler.disable(fn))
        return disabled[0](*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class RGT(nn.Module):
    """RGT super-resolution network: (B, 3, H, W) in [0, 1] -> (B, 3, s*H, s*W) (not clamped).

    Defaults are the released RGT config (8 groups); RGT-S is ``depth=[6]*6, num_heads=[6]*6``.
    Any input size works (see the module docstring for the padding of small / elongated inputs).
    """

    def __init__(
        self,
        upscale: int = 4,
        in_chans: int = 3,
        img_size: int = 64,
        embed_dim: int = 180,
        depth: Sequence[int] = (6,) * 8,
        num_heads: Sequence[int] = (6,) * 8,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        split_size: Sequence[int] = (8, 32),
        c_ratio: float = 0.5,
        img_range: float = 1.0,
        resi_connection: str = "1conv",
        upsampler: str = "pixelshuffle",
        num_feat: int = 64,
    ) -> None:
        super().__init__()
        if resi_connection != "1conv" or upsampler != "pixelshuffle":
            raise ValueError("only the released configuration (resi_connection='1conv', pixelshuffle) is implemented")
        if len(depth) != len(num_heads):
            raise ValueError("depth and num_heads need one entry per residual group")
        self.upscale = upscale
        self.img_range = img_range
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        split = (int(split_size[0]), int(split_size[1]))
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, padding=1)
        self.before_RG = nn.Sequential(ToTokens(), LayerNorm32(embed_dim))
        self.layers = nn.ModuleList(
            ResidualGroup(g, embed_dim, d, heads, mlp_ratio, split, c_ratio, img_size, qkv_bias)
            for g, (d, heads) in enumerate(zip(depth, num_heads, strict=True))
        )
        self.norm = LayerNorm32(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, padding=1)
        self.conv_before_upsample = nn.Sequential(
            nn.Conv2d(embed_dim, num_feat, 3, padding=1), nn.LeakyReLU(inplace=True)
        )
        self.upsample = _upsampler(upscale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, in_chans, 3, padding=1)
        for slot, module in enumerate(m for m in self.modules() if isinstance(m, LSA)):
            module.slot = slot

    def train(self, mode: bool = True) -> RGT:
        """Switch mode and drop cached position-bias tables (they hold the bias MLP's output)."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, WindowBranch):
                module.clear_cache()
        return self

    @_eager_under_compile
    def shape_constants(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> ShapeConstants:
        """Every L-SA module's index plans and position biases for an ``h x w`` (padded) input.

        Run eagerly even under ``torch.compile``: the caches and index arithmetic stay out of the traced
        graph, which then holds the whole network without a break; the tensors returned enter it as inputs.
        """
        return [m.constants(h, w, device, dtype) for m in self.modules() if isinstance(m, LSA)]

    def _activation_dtype(self, x: Tensor) -> torch.dtype:
        """The dtype the linear layers will produce for input ``x`` (autocast's, else the weights')."""
        kind = x.device.type
        try:
            if torch.is_autocast_enabled(kind):
                return torch.get_autocast_dtype(kind)
        except RuntimeError:  # a device type without autocast
            pass
        return self.conv_first.weight.dtype

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        hp, wp = safe_input_size(h, w, self.training)
        if (hp, wp) != (h, w):
            x = _mirror_pad(x, hp - h, wp - w)
        constants = self.shape_constants(hp, wp, x.device, self._activation_dtype(x))
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        fast = _cpu_fast_path(x)
        if fast:  # a channels-last first feature map: its tokens are a view
            x = x.contiguous(memory_format=torch.channels_last)
        f0 = self.conv_first(x)
        t = self.before_RG(f0)
        for layer in self.layers:
            t = layer(t, (hp, wp), constants)
        if fast:
            f = _conv_then(self.conv_after_body, _to_image(self.norm(t), hp, wp), f0, "add")
        else:
            f = self.conv_after_body(_to_image(self.norm(t), hp, wp)) + f0
        y = self.conv_last(self.upsample(self.conv_before_upsample(f)))
        y = y / self.img_range + mean
        s = self.upscale
        return y[..., : h * s, : w * s].contiguous()
