"""Costs behind the choices in srcli.io.imagefile: PNG/WebP encoder settings and the 16-bit PNG decoder.

    python benchmarks/imagefile_io.py [--repeat 3]

1. PNG zlib level and WebP settings on bicubic x4 enlargements of Set14 images (a stand-in for SR output;
   needs ../shared, else a synthetic image): seconds (best of --repeat) and bytes.
2. Decoding a 16-bit RGB PNG (1500x1000, Sub-filtered rows as srcli writes them): srcli's path (Pillow decoding
   twice, high and low bytes) against pypng. Both must give the same samples.
3. fill_transparent on a 2000x2000 RGBA frame with a transparent half.
Prints one JSON object. CPU times depend on the machine; compare ratios.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from srcli.io import imagefile

SET14 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmarks" / "Set14"


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(min(times), 3)


def encoder_settings(repeat: int) -> dict:
    sources = {n: SET14 / f"{n}.png" for n in ("baboon", "lenna", "comic")} if SET14.is_dir() else {}
    images = {n: Image.open(p).convert("RGB") for n, p in sources.items()}
    if not images:  # smooth synthetic picture with some noise
        y, x = np.mgrid[0:480, 0:500]
        rng = np.random.default_rng(0)
        arr = np.stack([np.sin(x / 17) * 80 + 128, np.cos(y / 23) * 80 + 128, (x + y) % 256], -1)
        images = {"synthetic": Image.fromarray((arr + rng.normal(0, 3, arr.shape)).clip(0, 255).astype(np.uint8))}
    out = {}
    for name, im in images.items():
        big = im.resize((im.width * 4, im.height * 4), Image.Resampling.BICUBIC)
        rows = {}
        settings = {f"png level {lvl}": ("PNG", {"compress_level": lvl}) for lvl in (1, 3, 6)}
        settings["webp q95 method 4"] = ("WEBP", {"quality": 95})
        settings["webp lossless effort q0 m0"] = ("WEBP", {"lossless": True, "quality": 0, "method": 0})
        settings["webp lossless effort q25 m2"] = ("WEBP", {"lossless": True, "quality": 25, "method": 2})
        for label, (fmt, options) in settings.items():
            buf = io.BytesIO()
            seconds = best(
                lambda fmt=fmt, options=options, buf=buf, big=big: (buf.seek(0), big.save(buf, fmt, **options)), repeat
            )
            rows[label] = {"seconds": seconds, "bytes": buf.tell()}
        out[f"{name} {big.width}x{big.height}"] = rows
    return out


def png16_decode(repeat: int) -> dict:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:1000, 0:1500]
    smooth = np.stack([np.sin(x / 50) * np.cos(y / 70), np.cos(x / 30), np.sin(y / 40)], -1) * 30000 + 32768
    src = (smooth + rng.normal(0, 200, smooth.shape)).clip(0, 65535).astype(np.uint16)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rgb16.png"
        frame = imagefile.Frame(rgb=src / 65535.0, alpha=None)
        write_s = best(lambda: imagefile.write_image_atomic(path, [frame], grey=False, bit_depth=16, fmt="PNG"), 1)
        fast = imagefile._read_png16(path, 1).colour
        slow = imagefile._read_png16_pypng(path).colour
        assert np.array_equal(fast, src) and np.array_equal(slow, src)
        return {
            "size": "1500x1000 RGB 16-bit, Sub filter",
            "srcli write seconds": write_s,
            "pillow high+low bytes seconds": best(lambda: imagefile._read_png16(path, 1), repeat),
            "pypng seconds": best(lambda: imagefile._read_png16_pypng(path), 1),
        }


def fill_cost(repeat: int) -> dict:
    rng = np.random.default_rng(0)
    rgb = rng.random((2000, 2000, 3), dtype=np.float32)
    alpha = np.ones((2000, 2000), np.float32)
    alpha[:, 1000:] = 0
    return {"2000x2000, half transparent, seconds": best(lambda: imagefile.fill_transparent(rgb, alpha), repeat)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    report = {
        "encoders (bicubic x4 stand-ins)": encoder_settings(args.repeat),
        "16-bit PNG decode": png16_decode(args.repeat),
        "fill_transparent": fill_cost(args.repeat),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
