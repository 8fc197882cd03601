"""The model registry: every fact about every model, in one declarative table.

The CLI, the engine and the evaluation ask this module; nothing else hard-codes a model fact.
Architectures are named by import path (``"srcli.archs.imdn:IMDN"``) so that reading the
registry never imports torch: ``srcli models list`` stays fast.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Literal

from srcli.errors import NotImplementedModelError, UnknownModelError, UnsupportedScaleError

ValueRange = tuple[float, float]
Precision = Literal["fp32", "bf16", "fp16"]

#: The model ``srcli upscale`` and ``srcli.upscale`` use when none is named: it ships inside the package.
DEFAULT_MODEL = "survey-net"

RANGE_01: ValueRange = (0.0, 1.0)
RANGE_PM1: ValueRange = (-1.0, 1.0)
RANGE_255: ValueRange = (0.0, 255.0)


@dataclass(frozen=True)
class InferenceProtocol:
    """How the paper's authors ran the model to produce their table.

    ``mode="whole"`` feeds the whole LR image at once; ``mode="tiled"`` cuts it into
    ``tile``-pixel tiles overlapping by ``overlap`` pixels and averages the overlaps.
    """

    mode: Literal["whole", "tiled"] = "whole"
    tile: int | None = None
    overlap: int | None = None

    def describe(self) -> str:
        """A short human-readable form, e.g. ``tiled 64 px / 24 overlap, averaged``."""
        if self.mode == "whole":
            return "whole image"
        return f"tiled {self.tile} px / {self.overlap} overlap, averaged"


@dataclass(frozen=True)
class PaperRef:
    """Where a model comes from."""

    title: str
    venue: str
    url: str = ""
    table: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """One registered model (a variant of a family), with everything needed to build and run it."""

    name: str
    family: str
    summary: str
    paper: PaperRef
    #: ``"module:Class"``; ``None`` while the architecture is not implemented yet.
    arch: str | None
    #: Constructor keyword arguments shared by every scale.
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    #: Name of the constructor argument that takes the scale.
    scale_kwarg: str = "scale"
    #: Scales the architecture is defined for.
    scales: tuple[int, ...] = (2, 3, 4)
    #: Scales with official (or our own) weights: keys ``<weights_name>.x<scale>`` in weights.toml.
    weight_scales: tuple[int, ...] = ()
    #: Name used for this model's entries in weights.toml (defaults to ``name``).
    weights_name: str | None = None
    aliases: tuple[str, ...] = ()
    #: Value range the weights expect on input and produce on output.
    value_range: ValueRange = RANGE_01
    #: Keys tried, in order, to unwrap a checkpoint dict (e.g. BasicSR's ``params``).
    checkpoint_keys: tuple[str, ...] = ("params_ema", "params", "state_dict", "model")
    #: Prefix stripped from every key (DataParallel's ``module.``).
    strip_prefix: str = "module."
    #: Keys that may appear in a checkpoint but are not part of the module (dropped before loading).
    ignore_keys: tuple[str, ...] = ()
    #: The input is padded to a multiple of this by the engine (1: no requirement).
    pad_multiple: int = 1
    #: Smallest input side the model accepts (smaller inputs are padded by the engine).
    min_size: int = 1
    protocol: InferenceProtocol = InferenceProtocol()
    #: LR pixels each tile shares with its neighbours in ``srcli upscale`` (at least the model's
    #: effective receptive margin, so the feathered merge hides tile borders).
    tile_overlap: int = 16
    #: Largest tile side ``--tile auto`` uses where free memory cannot be measured (CPU, MPS).
    auto_tile: int = 768
    #: Tile side ``--tile auto`` prefers whatever the memory (``None``: as large as fits). Attention
    #: models trained on small patches keep their statistics closer to training with small tiles.
    preferred_tile: int | None = None
    #: Reduced precisions that keep the output within tolerance of fp32 (fp32 is always safe).
    safe_precisions: tuple[Precision, ...] = ()
    #: Reduced precisions ``--precision auto`` may pick on a CPU that computes them natively: only where the
    #: measured PSNR-Y change against fp32 on Set5 and Set14 is at most 0.05 dB with the real weights
    #: (``benchmarks/cpu_precision.py``; the figures are in ``notes``). Empty: fp32 on the CPU.
    cpu_safe_precisions: tuple[Precision, ...] = ()
    #: Learnable parameters per scale, as counted on the implemented module.
    params: dict[int, int] = field(default_factory=dict)
    licence: str = ""
    #: Free text: where this implementation departs from upstream, what is missing.
    notes: str = ""
    #: Why the architecture cannot be built yet (shown instead of crashing).
    unavailable: str = ""
    #: False for parameter-free models (bicubic): nothing to download or load.
    needs_weights: bool = True

    @property
    def weights_key_name(self) -> str:
        """Prefix of this model's tables in weights.toml."""
        return self.weights_name or self.name

    def weights_key(self, scale: int) -> str:
        """The weights.toml table for ``scale`` (e.g. ``imdn.x4``)."""
        return f"{self.weights_key_name}.x{scale}"

    @property
    def implemented(self) -> bool:
        """True when the architecture can be built."""
        return self.arch is not None

    def check_scale(self, scale: int) -> None:
        """Raise ``UnsupportedScaleError`` unless the architecture exists at ``scale``."""
        if scale not in self.scales:
            have = ", ".join(f"x{s}" for s in self.scales)
            raise UnsupportedScaleError(f"model '{self.name}' has no x{scale} variant (it has {have})")

    def check_buildable(self, scale: int) -> None:
        """Raise unless the architecture exists at ``scale`` and is implemented (no torch import)."""
        self.check_scale(scale)
        if self.arch is None:
            raise NotImplementedModelError(
                f"model '{self.name}' is registered but its architecture is not implemented yet"
                + (f" ({self.unavailable})" if self.unavailable else "")
            )

    def build(self, scale: int) -> Any:
        """Instantiate the architecture for ``scale`` (imports torch). Returns an ``nn.Module``."""
        self.check_buildable(scale)
        assert self.arch is not None
        module_name, _, class_name = self.arch.partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        return cls(**{**self.arch_kwargs, self.scale_kwarg: scale})


_IMDN_PAPER = PaperRef(
    "Lightweight Image Super-Resolution with Information Multi-distillation Network",
    "ACM MM 2019",
    "https://arxiv.org/abs/1909.11856",
    "ASID Table 1; MSRA-SR Table 1 (comparison rows)",
)
_RLFN_PAPER = PaperRef(
    "Residual Local Feature Network for Efficient Super-Resolution",
    "CVPRW 2022",
    "https://arxiv.org/abs/2205.07514",
    "survey (hitchhikers-guide-sr), RLFN section",
)
_RGT_PAPER = PaperRef(
    "Recursive Generalization Transformer for Image Super-Resolution",
    "ICLR 2024",
    "https://arxiv.org/abs/2303.06373",
    "RGT Table 2",
)
_ASID_PAPER = PaperRef(
    "Attention-Sharing Information Distillation Transformer for Lightweight Single Image Super-Resolution",
    "AAAI 2025",
    "https://arxiv.org/abs/2501.15774",
    "ASID Table 1",
)
_MSRA_PAPER = PaperRef(
    "Image Super-resolution Transformer with Multi-scale Shared Representation Acquisition (MSRA-SR)",
    "ICCV 2023",
    "",
    "MSRA-SR Tables 1 and 2",
)

#: The measured PSNR-Y change behind ``cpu_safe_precisions``; ``{}``: the figures per scale.
_CPU_BF16_NOTE = (
    "CPU bf16 (picked by --precision auto where the processor computes bf16 natively): PSNR-Y change of bf16"
    " autocast against fp32 with the released weights, {} (benchmarks/cpu_precision.py; safe at |change| <= 0.05 dB)."
)

_RGT_COMMON: dict[str, Any] = dict(
    family="RGT",
    paper=_RGT_PAPER,
    arch="srcli.archs.rgt:RGT",
    # The released configs call the scale ``upscale``.
    scale_kwarg="upscale",
    weight_scales=(2, 3, 4),
    value_range=RANGE_01,
    checkpoint_keys=("params", "params_ema", "state_dict", "model"),
    # Any size works: the module mirror-pads inputs upstream rejects (a side < 16 px, or a short side
    # under 4^T for the recursion depth T of the long side) and crops; other sizes are not padded, so
    # the engine pads nothing (padding would change RG-SA's global pooling).
    pad_multiple=1,
    min_size=1,
    safe_precisions=("bf16", "fp16"),
    licence="Apache-2.0",
    notes="Upstream publishes no hash for x2/x3: srcli records it on first download and verifies it after"
    " (RGT-S x2/x3 exist only inside the authors' Google Drive folder, where srcli finds them by name)."
    " Inputs upstream rejects (a side under 16 px, or too elongated for RG-SA's recursion, e.g. 20x1100)"
    " are mirror-padded inside the model and cropped. Outputs depend on the input size (RG-SA pools the"
    " whole image), so tiles give slightly different results than the whole image. CPU bf16: not picked by"
    " --precision auto (no official weights on this machine to measure a PSNR-Y change); on the conformance goldens"
    " (recipe weights, 64x64 input) bf16 autocast departs from the authors' fp32 output by at most 0.055 (RGT x4) and"
    " 0.042 (RGT-S x2), 0.009 / 0.008 on average, on outputs of std 0.74 / 0.59 (benchmarks/cpu_precision.py).",
)
_ASID_COMMON: dict[str, Any] = dict(
    family="ASID",
    paper=_ASID_PAPER,
    arch="srcli.archs.asid:ASID",
    weight_scales=(2, 3, 4),
    value_range=RANGE_PM1,
    ignore_keys=("rel_pos_indices",),
    # The module zero-pads to a multiple of 8 itself (as upstream): engine-side reflect padding would change
    # the output, so the engine pads nothing.
    pad_multiple=1,
    min_size=1,
    protocol=InferenceProtocol("tiled", tile=64, overlap=24),
    # srcli upscale: the authors' 64 px tiles (their training and test regime), merged seamlessly.
    preferred_tile=64,
    tile_overlap=24,
    safe_precisions=("bf16", "fp16"),
    licence="not stated upstream",
    notes="Upstream publishes no hash: srcli records it on first download and verifies it after."
    " Inputs with a side of 8 px or less (which upstream rejects) are zero-padded to 16 px inside the model."
    " Key layout, ESA, LayerNorm2d and upsampler follow a reconstruction checked against conformance goldens,"
    " not yet against the released files. CPU bf16: not picked by --precision auto (no official weights on this"
    " machine to measure a PSNR-Y change); on the conformance goldens (recipe weights, 64x64 input) bf16 autocast"
    " departs from the authors' fp32 output by at most 0.43 (ASID x2) and 3.3 (ASID-D8 x4), 0.07 / 0.38 on"
    " average, on outputs of std 1.9 / 2.6 (benchmarks/cpu_precision.py).",
)
_MSRA_COMMON: dict[str, Any] = dict(
    family="MSRA-SR",
    paper=_MSRA_PAPER,
    arch="srcli.archs.msra_sr:MSRASR",
    # No weights were ever published: 'srcli train' or --weights FILE.
    weight_scales=(),
    value_range=RANGE_01,
    # The module mirror-pads to its window multiple (64) itself and crops: any size works.
    pad_multiple=1,
    min_size=1,
    safe_precisions=("bf16",),
    licence="Apache-2.0 (ours)",
)
_MSRA_READING = (
    "No code or weights were ever published (the authors used MindSpore); this is our PyTorch reading of"
    " the paper. From the paper: the layout (groups of 4 blocks, window 16, 6 heads, MLP ratio 2), cross-scale"
    " attention (s = 1, 2, 4), attention shared inside a group through a 3x3 depthwise F, channel attention as"
    " global attention, 1/3/5/7 depthwise convs folded into one 7x7 for inference. Ours: heads split 2 per"
    " scale, F on the s = 1 logits only, channel-attention width C, no shifted windows, mirror padding to 64"
    " inside the model, checkpoints in the folded (deploy) form."
)

MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="bicubic",
        family="Bicubic",
        summary="MATLAB-compatible bicubic interpolation (antialiased imresize); the baseline row.",
        paper=PaperRef("MATLAB imresize (bicubic, a = -0.5)", "baseline", "", "every paper's Bicubic row"),
        arch="srcli.archs.imresize:Bicubic",
        scales=(2, 3, 4),
        params={2: 0, 3: 0, 4: 0},
        needs_weights=False,
        safe_precisions=("bf16", "fp16"),
        licence="Apache-2.0 (ours)",
        aliases=("bic", "matlab-bicubic"),
    ),
    ModelSpec(
        name="imdn",
        family="IMDN",
        summary="Information multi-distillation network, lightweight CNN (715K parameters at x4).",
        paper=_IMDN_PAPER,
        arch="srcli.archs.imdn:IMDN",
        weight_scales=(2, 3, 4),
        value_range=RANGE_01,
        params={2: 694_404, 3: 703_059, 4: 715_176},
        safe_precisions=("bf16", "fp16"),
        cpu_safe_precisions=("bf16",),
        licence="not stated upstream",
        notes=_CPU_BF16_NOTE.format("x2: Set5 -0.025 dB, Set14 -0.013 dB; x4: Set5 -0.008 dB, Set14 -0.005 dB"),
    ),
    ModelSpec(
        name="rlfn",
        family="RLFN",
        summary="Residual local feature network (NTIRE 2022 efficient SR winner), 52 channels.",
        paper=_RLFN_PAPER,
        arch="srcli.archs.rlfn:RLFN",
        arch_kwargs={"num_features": 52},
        weight_scales=(2, 4),
        value_range=RANGE_255,
        min_size=15,
        params={2: 526_856, 4: 543_740},
        safe_precisions=("bf16", "fp16"),
        cpu_safe_precisions=("bf16",),
        licence="Apache-2.0",
        notes=_CPU_BF16_NOTE.format("x2: Set5 -0.014 dB, Set14 -0.010 dB; x4: Set5 -0.004 dB, Set14 -0.003 dB"),
    ),
    ModelSpec(
        name="rlfn-s",
        family="RLFN",
        summary="RLFN-S: the smaller RLFN, 48 channels.",
        paper=_RLFN_PAPER,
        arch="srcli.archs.rlfn:RLFN",
        arch_kwargs={"num_features": 48},
        weight_scales=(2, 4),
        aliases=("rlfn_s", "rlfns"),
        value_range=RANGE_255,
        min_size=15,
        params={2: 454_620, 4: 470_208},
        safe_precisions=("bf16", "fp16"),
        cpu_safe_precisions=("bf16",),
        licence="Apache-2.0",
        notes=_CPU_BF16_NOTE.format("x2: Set5 -0.022 dB, Set14 -0.019 dB; x4: Set5 -0.008 dB, Set14 -0.005 dB"),
    ),
    ModelSpec(
        name="survey-net",
        family="SurveyNet",
        summary="The survey's own small CNN: 4 residual distillation blocks, 48 channels, ESA (our implementation).",
        paper=PaperRef(
            "Hitchhiker's Guide to Super-Resolution: Introduction and Recent Advances",
            "reading notes on the survey (seeds/hitchhikers-guide-sr)",
            "",
            "'Possible Architecture' section (no published results)",
        ),
        arch="srcli.archs.survey_net:SurveyNet",
        # 48 x 4: ~0.3M parameters, 1.6x RLFN-S's CPU inference speed (benchmarks/survey_net_size.py).
        arch_kwargs={"num_features": 48, "num_blocks": 4},
        # Our own weights, shipped in the package (weights.toml: embedded): the offline default of 'srcli upscale'.
        weight_scales=(2, 3, 4),
        aliases=("hgsr", "survey_net", "surveynet"),
        value_range=RANGE_01,
        min_size=15,
        params={2: 301_308, 3: 307_803, 4: 316_896},
        cpu_safe_precisions=("bf16",),
        licence="Apache-2.0 (ours)",
        notes="Weights trained by srcli on T91 + BSD200 ship inside the package (see weights.toml for the recipe"
        " and scores); 'srcli train --model survey-net' trains your own. "
        + _CPU_BF16_NOTE.format(
            "x2: Set5 +0.013 dB, Set14 +0.005 dB; x3: Set5 -0.004 dB, Set14 -0.003 dB;"
            " x4: Set5 -0.005 dB, Set14 -0.004 dB"
        ),
    ),
    ModelSpec(
        name="rgt",
        summary="Recursive generalization transformer, 8 groups x 6 blocks.",
        arch_kwargs={"depth": (6,) * 8, "num_heads": (6,) * 8},
        params={2: 13_217_831, 3: 13_402_471, 4: 13_365_543},
        **_RGT_COMMON,
    ),
    ModelSpec(
        name="rgt-s",
        summary="RGT-S: the smaller RGT, 6 groups x 6 blocks.",
        aliases=("rgt_s", "rgts"),
        arch_kwargs={"depth": (6,) * 6, "num_heads": (6,) * 6},
        params={2: 10_051_055, 3: 10_235_695, 4: 10_198_767},
        **_RGT_COMMON,
    ),
    ModelSpec(
        name="asid",
        summary="Attention-sharing information distillation transformer, 3 blocks (lightweight).",
        arch_kwargs={"num_blocks": 3},
        params={2: 297_516, 3: 304_011, 4: 313_104},
        **_ASID_COMMON,
    ),
    ModelSpec(
        name="asid-d8",
        summary="ASID-D8: ASID with 8 distillation blocks.",
        aliases=("asid_d8", "asidd8"),
        arch_kwargs={"num_blocks": 8},
        params={2: 732_146, 3: 738_641, 4: 747_734},
        **_ASID_COMMON,
    ),
    ModelSpec(
        name="msra-sr-light",
        summary="MSRA-SR lightweight: 4 groups x 4 blocks, 60 channels, window 16 (our PyTorch design).",
        aliases=("msra-light", "msra_sr_light"),
        arch_kwargs={"deploy": True},
        params={2: 775_280, 3: 783_395, 4: 794_756},
        notes=_MSRA_READING + " Paper: 769K / 777K / 789K parameters, 196.0G Mult-Adds at x2; ours 775K /"
        " 783K / 795K and 196.8G (1024x720 output). Details: docs/msra-sr.md.",
        **_MSRA_COMMON,
    ),
    ModelSpec(
        name="msra-sr",
        summary="MSRA-SR classical: 6 groups x 4 blocks, 192 channels (our PyTorch design).",
        aliases=("msra", "msra_sr"),
        arch_kwargs={
            "embed_dim": 192,
            "depths": (4, 4, 4, 4, 4, 4),
            "upsampler": "pixelshuffle",
            "share_attn": False,
            "deploy": True,
        },
        params={2: 12_004_211, 3: 12_188_851, 4: 12_151_923},
        notes=_MSRA_READING + " Attention sharing is OFF in this classical variant, our reading of the"
        " numbers: the paper's text applies sharing to both tasks, but its classical x4 figures (12.2M"
        " parameters, 645G Mult-Adds) match this design without sharing (12.15M, 643G) and not with it"
        " (10.78M, 539G). Details: docs/msra-sr.md.",
        **_MSRA_COMMON,
    ),
)


def list_models() -> list[ModelSpec]:
    """Every registered model, in display order."""
    return list(MODELS)


def _index() -> dict[str, ModelSpec]:
    names: dict[str, ModelSpec] = {}
    for spec in MODELS:
        for key in (spec.name, *spec.aliases):
            names[key.lower()] = spec
    return names


def get_model(name: str) -> ModelSpec:
    """Look a model up by name or alias (case-insensitive); unknown names get a did-you-mean."""
    index = _index()
    spec = index.get(name.strip().lower())
    if spec is None:
        close = difflib.get_close_matches(name.lower(), list(index), n=1, cutoff=0.5)
        hint = f"; did you mean '{index[close[0]].name}'?" if close else ""
        known = ", ".join(s.name for s in MODELS)
        raise UnknownModelError(f"unknown model '{name}'{hint} (known: {known})")
    return spec
