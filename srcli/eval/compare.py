"""The papers' comparison figure: zoomed crops of the ground truth and of every model, with their scores.

:func:`run_compare` takes HR images (or, with ``lr_input``, low-resolution inputs), runs every model as
``srcli eval`` runs it (:mod:`srcli.eval.per_image`: MATLAB bicubic LR, the paper's inference protocol,
the same scores) and picks a crop per image; :func:`draw_figure` draws one row per image with Pillow:

    [ whole image, crop box drawn ] [ HR crop ] [ model 1 crop ] [ model 2 crop ] ...
      name, size                      HR          model 1           model 2
                                                  PSNR 30.12 dB     PSNR 30.87 dB
                                                  SSIM 0.8712       SSIM 0.8801

Crops are enlarged by an integer ``zoom`` with nearest-neighbour (every pixel becomes a zoom x zoom
square); the whole image is reduced (Lanczos) to the crops' height when it is taller. Each score is
the model's on the whole image, exactly as ``srcli eval --per-image`` reports it; the best value of a
metric in a row is drawn in red. :func:`figure_layout` gives every panel's position.

``--crop auto`` (:func:`choose_crop`): the square window, ``max(16, shorter side // 6)`` pixels unless a
size is given, that maximises the sum over the window of the per-pixel variance, across the reference
(HR; bicubic for LR input) and every model output, of the luma Y (BT.601, on the uint8 levels shown),
i.e. where the outputs disagree with each other and with the ground truth most. Only windows that
stay ``scale`` pixels clear of every border (the part the scores ignore) compete; the sums come from an
integral image, and ties go to the first window in row-major order (top, then left). When every
window scores 0 (the outputs are identical) the centred window is taken.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srcli.errors import UsageError
from srcli.eval.per_image import BASE_METRICS, format_metric, metric_label

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image, ImageFont

    from srcli.eval.per_image import ProtocolModel

# ----------------------------------------------------------------------------------------- crops

#: Smallest side ``--crop auto`` picks.
MIN_AUTO_CROP = 16
#: ``--crop auto``'s side is the image's shorter side divided by this.
AUTO_CROP_FRACTION = 6


@dataclass(frozen=True)
class Crop:
    """A rectangle in the compared images' pixels: left ``x``, top ``y``, width ``w``, height ``h``."""

    x: int
    y: int
    w: int
    h: int

    def check_inside(self, width: int, height: int, what: str) -> None:
        """Raise ``UsageError`` unless the crop lies inside a ``width`` x ``height`` image called ``what``."""
        if self.x < 0 or self.y < 0 or self.x + self.w > width or self.y + self.h > height:
            raise UsageError(
                f"--crop {self.text()} does not fit inside {what} ({width}x{height}, after cropping to a "
                "multiple of the scale)"
            )

    def text(self) -> str:
        """``X,Y,W,H``, as ``--crop`` takes it."""
        return f"{self.x},{self.y},{self.w},{self.h}"


@dataclass(frozen=True)
class AutoCrop:
    """``--crop auto`` (``size=None``: ``max(16, shorter side // 6)``) or ``--crop auto:SIZE``."""

    size: int | None = None


CropSpec = Crop | AutoCrop


def parse_crop(text: str) -> CropSpec:
    """``--crop`` text: ``auto``, ``auto:SIZE`` or ``X,Y,W,H`` (pixels of the compared images)."""
    value = text.strip().lower()
    if value == "auto":
        return AutoCrop()
    if value.startswith("auto:"):
        size = value.removeprefix("auto:")
        if not size.isdigit() or int(size) < 1:
            raise UsageError(f"--crop auto:SIZE needs a positive whole number of pixels, not '{size}'")
        return AutoCrop(int(size))
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise UsageError(f"--crop must be X,Y,W,H (whole pixels), 'auto' or 'auto:SIZE', not '{text}'")
    x, y, w, h = (int(p) for p in parts)
    if w < 1 or h < 1:
        raise UsageError(f"--crop {text}: width and height must be at least 1")
    return Crop(x, y, w, h)


def auto_crop_size(width: int, height: int) -> int:
    """The side ``--crop auto`` uses on a ``width`` x ``height`` image: ``max(16, min(w, h) // 6)``,
    no larger than the image."""
    return min(max(MIN_AUTO_CROP, min(width, height) // AUTO_CROP_FRACTION), width, height)


def disagreement_map(images: Sequence[np.ndarray]) -> torch.Tensor:
    """Per-pixel variance (population, over the images) of the BT.601 luma of same-size RGB uint8 images
    (H, W, 3): float64 (H, W). The luma is ``srcli.eval.metrics.rgb_to_y`` on the 0-255 levels."""
    import torch

    from srcli.eval.metrics import rgb_to_y

    if not images:
        raise ValueError("disagreement_map needs at least one image")
    stack = torch.stack([torch.from_numpy(img).permute(2, 0, 1) for img in images]).to(torch.float64)
    return rgb_to_y(stack).var(dim=0, unbiased=False)


def choose_crop(score_map: torch.Tensor, size: int, border: int = 0) -> Crop:
    """The ``size`` x ``size`` window whose sum of ``score_map`` (H, W) is largest, among the windows that
    keep ``border`` pixels from every edge (the border is dropped where the image is too small for it).

    Window sums come from an integral image (float64); ties go to the first window in row-major order;
    an all-zero map gives the centred window.
    """
    import torch

    height, width = score_map.shape
    size = min(size, height, width)
    if size + 2 * border > min(height, width):
        border = 0
    integral = torch.zeros(height + 1, width + 1, dtype=torch.float64)
    integral[1:, 1:] = score_map.to(torch.float64).cumsum(0).cumsum(1)
    # sums[y, x] = score_map[y : y + size, x : x + size].sum()
    sums = integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    sums = sums[border : height - size - border + 1, border : width - size - border + 1]
    if not bool((sums > 0).any()):
        return Crop((width - size) // 2, (height - size) // 2, size, size)
    index = int(torch.argmax(sums.flatten()))  # the first maximum, in row-major order
    y, x = divmod(index, sums.shape[1])
    return Crop(x + border, y + border, size, size)


def enlarge(image: np.ndarray, crop: Crop, zoom: int) -> np.ndarray:
    """The ``crop`` of an (H, W, 3) uint8 image enlarged ``zoom`` times with nearest-neighbour."""
    import numpy as np

    piece = image[crop.y : crop.y + crop.h, crop.x : crop.x + crop.w]
    return np.ascontiguousarray(np.repeat(np.repeat(piece, zoom, axis=0), zoom, axis=1))


# ----------------------------------------------------------------------------------------- running


@dataclass
class ComparedImage:
    """One image compared: what every column shows, the crop and the scores."""

    name: str
    path: str
    #: (width, height) of the compared images: the mod-cropped HR, or the LR input times the scale.
    size: tuple[int, int]
    crop: Crop
    #: How the crop was chosen: ``given`` or ``auto``.
    crop_source: str
    #: The first crop column: ``HR`` (ground truth) or ``bicubic`` (LR input).
    reference_label: str
    #: (H, W, 3) uint8: the HR image, or the bicubic upscale of the LR input.
    reference: np.ndarray = field(repr=False)
    #: Model name -> its output as (H, W, 3) uint8 (clamped and rounded as it is scored), in column order.
    outputs: dict[str, np.ndarray] = field(repr=False)
    #: Model name -> metric -> value on the whole image, as ``srcli eval --per-image``; empty for LR input.
    scores: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class CompareResult:
    """Every image compared, with the models and metrics, ready to draw or to write as HTML."""

    scale: int
    #: True when the images were the LR inputs (no ground truth, no scores).
    lr_input: bool
    metrics: list[str]
    models: list[str]
    images: list[ComparedImage]
    #: Model name -> how it ran (``ProtocolModel.record``).
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no pixels): per image its size, crop and every model's scores."""
        from srcli.eval.protocol import PROTOCOL_DESCRIPTION

        return {
            "scale": self.scale,
            "lr_input": self.lr_input,
            "metrics": [] if self.lr_input else list(self.metrics),
            "models": list(self.models),
            "protocol": None if self.lr_input else dict(PROTOCOL_DESCRIPTION),
            "runs": self.runs,
            "images": [
                {
                    "name": img.name,
                    "path": img.path,
                    "size": list(img.size),
                    "crop": [img.crop.x, img.crop.y, img.crop.w, img.crop.h],
                    "crop_source": img.crop_source,
                    "reference": img.reference_label,
                    "scores": img.scores,
                }
                for img in self.images
            ],
        }


def to_uint8_image(img01: torch.Tensor) -> np.ndarray:
    """An SR output (3, H, W) in [0, 1] as the evaluation scores it (clamped, rounded), as (H, W, 3) uint8."""
    import torch

    from srcli.eval.protocol import to_uint8_levels

    return to_uint8_levels(img01).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


#: Called as ``progress(done, total, what)`` after each model run.
CompareProgress = Callable[[int, int, str], None]


def _check_crop(crop: CropSpec, width: int, height: int, name: str) -> None:
    """Raise ``UsageError`` if ``crop`` (a rectangle, or an auto size) does not fit a ``width`` x ``height`` image."""
    if isinstance(crop, Crop):
        crop.check_inside(width, height, name)
    elif crop.size is not None and crop.size > min(width, height):
        raise UsageError(f"--crop auto:{crop.size} is larger than {name} ({width}x{height})")


def _compared_size(path: Path, scale: int, lr_input: bool) -> tuple[int, int] | None:
    """(width, height) the compared images of ``path`` will have, from its header; ``None`` if unreadable
    (reading it properly then reports why)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, ValueError, SyntaxError):
        return None
    if lr_input:
        return width * scale, height * scale
    return width - width % scale, height - height % scale


def run_compare(
    paths: Sequence[str | Path],
    models: Sequence[ProtocolModel],
    *,
    lr_input: bool = False,
    bicubic: ProtocolModel | None = None,
    crop: CropSpec = AutoCrop(),
    metrics: Sequence[str] = BASE_METRICS,
    progress: CompareProgress | None = None,
) -> CompareResult:
    """Run every model on every image and pick the crops.

    HR input (default): each image is cropped to a multiple of the scale, its LR made with the
    evaluation's MATLAB bicubic, each model run as ``srcli eval`` runs it and scored with ``metrics``
    (:func:`srcli.eval.per_image.score_image`). With ``lr_input`` the images are the LR inputs: no
    scores, and ``bicubic`` (required) gives the reference column; a model called ``bicubic`` in
    ``models`` is then not repeated. ``crop``: one rectangle for every image, or :class:`AutoCrop`
    (see the module docstring). All models must share one scale.
    """
    import torch

    from srcli.eval.per_image import load_hr, score_image
    from srcli.eval.protocol import make_lr
    from srcli.io.images import read_rgb_uint8

    if not models and not lr_input:
        raise UsageError("give at least one model to compare")
    scales = {m.scale for m in models} | ({bicubic.scale} if bicubic is not None else set())
    if len(scales) != 1:
        raise UsageError(f"the models run at different scales ({sorted(scales)}); give one scale with -s")
    scale = scales.pop()
    if lr_input:
        if bicubic is None:
            raise UsageError("LR input needs the bicubic model for the reference column")
        models = [m for m in models if m.name != bicubic.name]
    columns = [m.name for m in models]
    if len(set(columns)) != len(columns):
        raise UsageError(f"a model is listed twice: {', '.join(columns)}")
    for path in paths:  # refuse a crop that does not fit before any model runs
        size = _compared_size(Path(path), scale, lr_input)
        if size is not None:
            _check_crop(crop, *size, Path(path).name)
    total = len(paths) * (len(models) + (1 if lr_input else 0))
    done = 0
    images: list[ComparedImage] = []
    for path in paths:
        path = Path(path)
        if lr_input:
            lr_uint8 = read_rgb_uint8(path)
            lr = lr_uint8.to(torch.float32) / 255.0
            assert bicubic is not None
            reference = to_uint8_image(bicubic(lr))
            done += 1
            if progress:
                progress(done, total, f"{bicubic.name} {path.name}")
        else:
            hr = load_hr(path, scale)
            lr = make_lr(hr, scale)
            reference = hr.permute(1, 2, 0).contiguous().numpy()
        height, width = reference.shape[:2]
        _check_crop(crop, width, height, path.name)
        outputs: dict[str, np.ndarray] = {}
        scores: dict[str, dict[str, float]] = {}
        for model in models:
            sr = model(lr)
            outputs[model.name] = to_uint8_image(sr)
            if not lr_input:
                scores[model.name] = score_image(sr, hr, scale, metrics)
            done += 1
            if progress:
                progress(done, total, f"{model.name} {path.name}")
        if isinstance(crop, Crop):
            chosen, source = crop, "given"
        else:
            size = crop.size if crop.size is not None else auto_crop_size(width, height)
            chosen = choose_crop(disagreement_map([reference, *outputs.values()]), size, border=scale)
            source = "auto"
        images.append(
            ComparedImage(
                name=path.name,
                path=str(path),
                size=(width, height),
                crop=chosen,
                crop_source=source,
                reference_label="bicubic" if lr_input else "HR",
                reference=reference,
                outputs=outputs,
                scores=scores,
            )
        )
    runs = {m.name: m.record() for m in ([bicubic] if lr_input and bicubic else []) + list(models)}
    return CompareResult(
        scale=scale,
        lr_input=lr_input,
        metrics=list(metrics),
        models=columns,
        images=images,
        runs=runs,
    )


def best_values(image: ComparedImage, metrics: Sequence[str]) -> dict[str, float]:
    """Metric -> the best value among the models on ``image`` (higher or lower as the metric says);
    only where at least two models have a finite value."""
    from srcli.eval.per_image import available_metrics

    higher = available_metrics()
    best: dict[str, float] = {}
    for metric in metrics:
        values = [s[metric] for s in image.scores.values() if metric in s and math.isfinite(s[metric])]
        if len(values) >= 2:
            best[metric] = max(values) if higher.get(metric, True) else min(values)
    return best


# ----------------------------------------------------------------------------------------- drawing

#: Margin around the figure and gap between panels and rows, in pixels.
PAD = 8
#: Label text size (the largest; a label too wide for its panel is drawn smaller).
FONT_SIZE = 14
#: Smallest text size a label is shrunk to before it is shortened with an ellipsis.
MIN_FONT_SIZE = 8
#: Height of one label line.
LINE_HEIGHT = 18
#: Gap between a panel and its first label line.
TEXT_GAP = 4
#: Default zoom: the integer nearest to this size divided by the crop's longer side (at least 1).
DEFAULT_TILE = 256
#: Width of the crop box on the whole image.
BOX_WIDTH = 2
BOX_COLOUR = (230, 0, 0)
BEST_COLOUR = (200, 0, 0)
TEXT_COLOUR = (0, 0, 0)
BACKGROUND = (255, 255, 255)


def default_zoom(crop: Crop) -> int:
    """``round(256 / longer side)``, at least 1: crops of any size come out about 256 px."""
    return max(1, round(DEFAULT_TILE / max(crop.w, crop.h)))


@dataclass(frozen=True)
class Box:
    """A panel's place in the figure: left, top, width, height in pixels."""

    x: int
    y: int
    w: int
    h: int


@dataclass
class RowLayout:
    """Where one image's panels go."""

    image: ComparedImage
    zoom: int
    #: The whole image, reduced by ``overview_scale`` (1 when it is no taller than the crops).
    overview: Box
    overview_scale: float
    #: (column label, box): the reference crop first, then each model's, left to right.
    tiles: list[tuple[str, Box]]
    #: Top of the first label line, and the number of lines every panel of the row has room for.
    label_top: int
    lines: int


@dataclass
class FigureLayout:
    """The figure's size and every row's panels."""

    width: int
    height: int
    rows: list[RowLayout]


def label_lines(result: CompareResult) -> int:
    """Lines of text under each panel: 2 under the whole image (name, :func:`size_text`); under a model crop its
    name and one line per metric (none for LR input)."""
    return max(2, 1 + (0 if result.lr_input else len(result.metrics)))


def figure_layout(result: CompareResult, zoom: int | None = None) -> FigureLayout:
    """Place every panel. ``zoom=None``: :func:`default_zoom` per image.

    Per row: ``PAD``, the whole image (``round(W * s)`` x ``round(H * s)``, ``s = min(1, tile height / H)``),
    then ``1 + models`` crop tiles of ``crop * zoom`` pixels, each followed by ``PAD``; below them
    ``TEXT_GAP + lines * LINE_HEIGHT + PAD``. The figure is as wide as its widest row.
    """
    rows: list[RowLayout] = []
    lines = label_lines(result)
    top = PAD
    width = 0
    for image in result.images:
        z = zoom or default_zoom(image.crop)
        tile_w, tile_h = image.crop.w * z, image.crop.h * z
        img_w, img_h = image.size
        scale = min(1.0, tile_h / img_h)
        ov_w, ov_h = max(1, round(img_w * scale)), max(1, round(img_h * scale))
        x = PAD
        overview = Box(x, top, ov_w, ov_h)
        x += ov_w + PAD
        tiles = []
        for label in [image.reference_label, *result.models]:
            tiles.append((label, Box(x, top, tile_w, tile_h)))
            x += tile_w + PAD
        label_top = top + max(tile_h, ov_h) + TEXT_GAP
        rows.append(RowLayout(image, z, overview, scale, tiles, label_top, lines))
        width = max(width, x)
        top = label_top + lines * LINE_HEIGHT + PAD
    return FigureLayout(width=width, height=top, rows=rows)


_FONTS: dict[int, Any] = {}


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at ``size`` px (scalable from Pillow 10.1; the fixed bitmap font before)."""
    from PIL import ImageFont

    if size not in _FONTS:
        try:
            _FONTS[size] = ImageFont.load_default(size=size)
        except TypeError:  # Pillow 10.0: no size argument
            _FONTS[size] = ImageFont.load_default()
    return _FONTS[size]


def _fit(text: str, width: int) -> tuple[str, Any]:
    """``text`` and a font that fits ``width`` px: the label size, shrunk if needed, then shortened."""
    for size in range(FONT_SIZE, MIN_FONT_SIZE - 1, -1):
        f = font(size)
        if f.getlength(text) <= width:
            return text, f
    f = font(MIN_FONT_SIZE)
    while len(text) > 1 and f.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…", f


def _draw_label(draw: Any, lines: Sequence[tuple[str, tuple[int, int, int]]], box: Box, top: int) -> None:
    """Draw ``(text, colour)`` lines centred under ``box`` from ``top``, one per ``LINE_HEIGHT``."""
    for i, (text, colour) in enumerate(lines):
        fitted, f = _fit(text, box.w)
        draw.text((box.x + box.w / 2, top + i * LINE_HEIGHT), fitted, font=f, fill=colour, anchor="ma")


def overview_image(image: ComparedImage, height_scale: float) -> Image.Image:
    """The whole reference image, reduced by ``height_scale`` (Lanczos) when below 1, with the crop box."""
    from PIL import Image, ImageDraw

    whole = Image.fromarray(image.reference)
    if height_scale < 1.0:
        size = (max(1, round(image.size[0] * height_scale)), max(1, round(image.size[1] * height_scale)))
        whole = whole.resize(size, Image.Resampling.LANCZOS)
    c = image.crop
    x0, y0 = math.floor(c.x * height_scale), math.floor(c.y * height_scale)
    x1 = max(x0 + 1, math.ceil((c.x + c.w) * height_scale) - 1)
    y1 = max(y0 + 1, math.ceil((c.y + c.h) * height_scale) - 1)
    ImageDraw.Draw(whole).rectangle((x0, y0, x1, y1), outline=BOX_COLOUR, width=BOX_WIDTH)
    return whole


def score_line(metric: str, value: float | None) -> str:
    """``PSNR 30.12 dB``, ``SSIM 0.8712``: a metric as the figure labels it (the digits ``srcli eval`` prints)."""
    unit = " dB" if metric == "psnr" and value is not None and math.isfinite(value) else ""
    return f"{metric_label(metric)} {format_metric(metric, value)}{unit}"


def size_text(result: CompareResult, image: ComparedImage) -> str:
    """``288x288`` (the scored HR size), or for LR input ``72x72 input, x4``."""
    width, height = image.size
    if result.lr_input:
        return f"{width // result.scale}x{height // result.scale} input, x{result.scale}"
    return f"{width}x{height}"


def draw_figure(result: CompareResult, zoom: int | None = None) -> Image.Image:
    """The comparison figure as an RGB Pillow image (see the module docstring and :func:`figure_layout`)."""
    from PIL import Image, ImageDraw

    layout = figure_layout(result, zoom)
    figure = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(figure)
    for row in layout.rows:
        image = row.image
        figure.paste(overview_image(image, row.overview_scale), (row.overview.x, row.overview.y))
        _draw_label(
            draw, [(image.name, TEXT_COLOUR), (size_text(result, image), TEXT_COLOUR)], row.overview, row.label_top
        )
        best = best_values(image, result.metrics)
        for index, (label, box) in enumerate(row.tiles):
            source = image.reference if index == 0 else image.outputs[label]
            figure.paste(Image.fromarray(enlarge(source, image.crop, row.zoom)), (box.x, box.y))
            lines = [(label, TEXT_COLOUR)]
            if index > 0 and not result.lr_input:
                for metric in result.metrics:
                    value = image.scores[label].get(metric)
                    colour = BEST_COLOUR if metric in best and value == best[metric] else TEXT_COLOUR
                    lines.append((score_line(metric, value), colour))
            _draw_label(draw, lines, box, row.label_top)
    return figure
