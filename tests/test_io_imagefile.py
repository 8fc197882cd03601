"""Image files for `srcli upscale`: 16 bits, grey, alpha, orientation, ICC/EXIF, animation, bad files, atomic writes.

Every input is generated here with Pillow, pypng or tifffile, and every check reads results back with those
libraries (not with the module under test) unless it is the module's own round trip.
"""

from __future__ import annotations

import io
import os
import re

import numpy as np
import png
import pytest
import tifffile
from PIL import Image, ImageCms, ImageFile, ImageOps

from srcli.errors import ImageReadError, ImageWriteError, UsageError
from srcli.io import imagefile
from srcli.io.imagefile import (
    DecodedImage,
    Frame,
    fill_transparent,
    luma,
    output_format_for,
    probe_image,
    read_image,
    write_image_atomic,
)

RNG = np.random.default_rng(1234)
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def as_uint(values: np.ndarray, bits: int) -> np.ndarray:
    """Float [0, 1] back to the integers they came from (exact for k/255 and k/65535)."""
    maxval = 65535 if bits == 16 else 255
    return np.rint(values * maxval).astype(np.uint16 if bits == 16 else np.uint8)


def write_png16(path, arr: np.ndarray, **options) -> None:
    h, w = arr.shape[:2]
    planes = 1 if arr.ndim == 2 else arr.shape[2]
    with open(path, "wb") as fh:
        writer = png.Writer(w, h, greyscale=planes in (1, 2), alpha=planes in (2, 4), bitdepth=16, **options)
        writer.write(fh, arr.reshape(h, w * planes))


def read_png16(path) -> np.ndarray:
    width, height, rows, info = png.Reader(filename=str(path)).read()
    assert info["bitdepth"] == 16
    return np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(height, width, info["planes"]).squeeze()


def save(frames, path, *, grey=False, bit_depth=8, fmt="PNG", **kwargs):
    write_image_atomic(path, frames, grey=grey, bit_depth=bit_depth, fmt=fmt, **kwargs)


def still(decoded: DecodedImage) -> Frame:
    assert len(decoded.frames) == 1
    return decoded.frames[0]


# ------------------------------------------------------------------------------------------------ 16 bits


@pytest.mark.parametrize(
    ("planes", "interlace"),
    [(3, False), (4, False), (3, True), (2, False), (1, False)],
    ids=["rgb", "rgba", "rgb-interlaced", "grey-alpha", "grey"],
)
def test_16_bit_png_round_trip_is_exact(tmp_path, planes, interlace):
    src = RNG.integers(0, 65536, (9, 13, planes) if planes > 1 else (9, 13), dtype=np.uint16)
    write_png16(tmp_path / "in.png", src, interlace=interlace)

    decoded = read_image(tmp_path / "in.png")
    assert decoded.bit_depth == 16 and decoded.grey == (planes <= 2) and decoded.size == (13, 9)
    frame = still(decoded)
    colour = src[..., : 3 if planes >= 3 else 1] if planes > 1 else src[..., None]
    assert np.array_equal(as_uint(frame.rgb, 16), np.broadcast_to(colour, (9, 13, 3)))
    if planes in (2, 4):
        assert np.array_equal(as_uint(frame.alpha, 16), src[..., -1])
    else:
        assert frame.alpha is None

    save(decoded.frames, tmp_path / "out.png", grey=decoded.grey, bit_depth=16)
    assert np.array_equal(read_png16(tmp_path / "out.png"), src)  # read back by pypng, independently


def test_16_bit_png_fast_path_and_pypng_fallback_agree(tmp_path, monkeypatch):
    # A file with filtered rows (srcli's writer uses the Sub filter) through both decoders.
    src = RNG.integers(0, 65536, (17, 11, 4), dtype=np.uint16)
    frame = Frame(rgb=src[..., :3] / 65535.0, alpha=src[..., 3] / 65535.0)
    save([frame], tmp_path / "f.png", bit_depth=16)
    fast = still(read_image(tmp_path / "f.png"))

    def no_fast_path(*args, **kwargs):
        raise ValueError("disabled")

    monkeypatch.setattr(imagefile, "_read_16bit_pillow", no_fast_path)
    slow = still(read_image(tmp_path / "f.png"))
    for got in (fast, slow):
        assert np.array_equal(as_uint(got.rgb, 16), src[..., :3]) and np.array_equal(
            as_uint(got.alpha, 16), src[..., 3]
        )


def test_16_bit_png_colour_key_becomes_alpha(tmp_path):
    src = RNG.integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    src[2, 3] = (1000, 2000, 3000)
    write_png16(tmp_path / "k.png", src, transparent=(1000, 2000, 3000))
    alpha = still(read_image(tmp_path / "k.png")).alpha
    expected = np.ones((5, 6), np.float32)
    expected[(src == (1000, 2000, 3000)).all(axis=2)] = 0
    assert np.array_equal(alpha, expected)


@pytest.mark.parametrize("planes", [3, 4, 1])
def test_16_bit_tiff_round_trip_is_exact(tmp_path, planes, monkeypatch):
    shape = (7, 10, planes) if planes > 1 else (7, 10)
    src = RNG.integers(0, 65536, shape, dtype=np.uint16)
    options = {"photometric": "rgb" if planes >= 3 else "minisblack", "compression": "zlib"}
    if planes == 4:
        options["extrasamples"] = ["unassalpha"]
    tifffile.imwrite(tmp_path / "in.tif", src, **options)

    results = [read_image(tmp_path / "in.tif")]
    # The fallback for TIFFs tifffile cannot decode (LZW without imagecodecs) must be exact as well.
    monkeypatch.setattr(imagefile, "_read_tiff16_tifffile", lambda path: 1 / 0)
    results.append(read_image(tmp_path / "in.tif"))
    monkeypatch.undo()
    for decoded in results:
        assert decoded.bit_depth == 16 and decoded.grey == (planes == 1)
        frame = still(decoded)
        colour = src[..., :3] if planes > 1 else src[..., None]
        assert np.array_equal(as_uint(frame.rgb, 16), np.broadcast_to(colour, (7, 10, 3)))
        if planes == 4:
            assert np.array_equal(as_uint(frame.alpha, 16), src[..., 3])

    decoded = results[0]
    save(decoded.frames, tmp_path / "out.tif", grey=decoded.grey, bit_depth=16, fmt="TIFF")
    back = tifffile.imread(tmp_path / "out.tif")
    assert back.dtype == np.uint16 and np.array_equal(back, src)


def test_associated_alpha_tiff_is_unpremultiplied(tmp_path):
    alpha = np.full((4, 4), 32768, np.uint16)
    colour = np.full((4, 4, 3), 16384, np.uint16)  # premultiplied: straight value is 16384 / 32768 = 0.5
    tifffile.imwrite(tmp_path / "p.tif", np.dstack([colour, alpha]), photometric="rgb", extrasamples=["assocalpha"])
    frame = still(read_image(tmp_path / "p.tif"))
    assert np.allclose(frame.rgb, 0.5, atol=1e-4) and np.allclose(frame.alpha, 32768 / 65535)


def test_16_bit_source_written_as_8_bit_rounds(tmp_path):
    src = np.array([[0, 128, 129, 32896, 65535]], np.uint16)  # 128/257 = 0.498 -> 0, 129/257 = 0.502 -> 1
    write_png16(tmp_path / "g.png", src)
    decoded = read_image(tmp_path / "g.png")
    save(decoded.frames, tmp_path / "g8.png", grey=True, bit_depth=8)
    assert np.asarray(Image.open(tmp_path / "g8.png")).tolist() == [[0, 0, 1, 128, 255]]


# ------------------------------------------------------------------------------------- grey, palette, alpha


def test_grey_stays_grey(tmp_path):
    grey = RNG.integers(0, 256, (6, 9), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    decoded = read_image(tmp_path / "g.png")
    assert decoded.grey and decoded.bit_depth == 8
    rgb = still(decoded).rgb
    assert rgb.shape == (6, 9, 3) and np.array_equal(as_uint(rgb, 8), np.repeat(grey[..., None], 3, axis=2))

    for fmt, name in [("PNG", "o.png"), ("JPEG", "o.jpg"), ("TIFF", "o.tif"), ("BMP", "o.bmp")]:
        save(decoded.frames, tmp_path / name, grey=True, fmt=fmt, quality=100)
        with Image.open(tmp_path / name) as out:
            assert out.mode in ("L", "P") and out.size == (9, 6), fmt
            if fmt != "JPEG":
                assert np.array_equal(np.asarray(out.convert("L")), grey), fmt


def test_grey_output_is_the_mean_of_the_result_channels(tmp_path):
    rgb = RNG.random((4, 5, 3), dtype=np.float32)
    expected = np.rint((rgb[..., 0] + rgb[..., 1] + rgb[..., 2]) / 3 * 255)
    assert np.allclose(luma(rgb), rgb.sum(axis=2) / 3, atol=1e-6)
    save([Frame(rgb=rgb, alpha=None)], tmp_path / "m.png", grey=True)
    assert np.abs(np.asarray(Image.open(tmp_path / "m.png")).astype(int) - expected).max() <= 1
    assert luma(np.array([[[1, 1, 2], [1, 2, 2]]], np.uint8)).tolist() == [[1, 2]]


def test_palette_with_transparency_index_gives_alpha(tmp_path):
    im = Image.new("P", (5, 4), 1)
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    im.putpixel((2, 1), 0)
    im.save(tmp_path / "p.png", transparency=0)
    decoded = read_image(tmp_path / "p.png")
    frame = still(decoded)
    assert not decoded.grey and decoded.has_alpha
    expected_alpha = np.ones((4, 5), np.float32)
    expected_alpha[1, 2] = 0
    assert np.array_equal(frame.alpha, expected_alpha)
    assert as_uint(frame.rgb, 8)[0, 0].tolist() == [200, 100, 50]


def test_palette_without_transparency_is_plain_rgb(tmp_path):
    im = Image.new("P", (3, 3), 1)
    im.putpalette([0, 0, 0, 7, 8, 9] + [0] * 762)
    im.save(tmp_path / "p.gif")
    decoded = read_image(tmp_path / "p.gif")
    assert not decoded.has_alpha and not decoded.animated
    assert as_uint(still(decoded).rgb, 8)[1, 1].tolist() == [7, 8, 9]


@pytest.mark.parametrize(("fmt", "name", "options"), [("PNG", "a.png", {}), ("WEBP", "a.webp", {"quality": 100})])
def test_rgba_alpha_preserved(tmp_path, fmt, name, options):
    src = RNG.integers(0, 256, (8, 6, 4), dtype=np.uint8)
    Image.fromarray(src).save(tmp_path / "in.png")
    decoded = read_image(tmp_path / "in.png")
    frame = still(decoded)
    assert np.array_equal(as_uint(frame.alpha, 8), src[..., 3])
    save(decoded.frames, tmp_path / name, fmt=fmt, **options)
    with Image.open(tmp_path / name) as out:
        back = np.asarray(out.convert("RGBA"))
    assert np.array_equal(back[..., 3], src[..., 3])
    visible = src[..., 3] > 0  # lossless WebP may change colour under alpha 0
    assert np.array_equal(back[..., :3][visible], src[..., :3][visible])


def test_grey_alpha_keeps_alpha(tmp_path):
    src = RNG.integers(0, 256, (5, 5, 2), dtype=np.uint8)
    Image.fromarray(src).save(tmp_path / "la.png")
    decoded = read_image(tmp_path / "la.png")
    assert decoded.grey and np.array_equal(as_uint(still(decoded).alpha, 8), src[..., 1])
    save(decoded.frames, tmp_path / "out.png", grey=True)
    assert Image.open(tmp_path / "out.png").mode == "LA"
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), src)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    expected = np.asarray(Image.open(tmp_path / "c.jpg").convert("RGB"))
    decoded = read_image(tmp_path / "c.jpg")
    assert np.array_equal(as_uint(still(decoded).rgb, 8), expected) and decoded.icc_profile is None
    assert expected[0, 0, 0] > 200 and expected[0, 0, 1] < 50  # red


# ---------------------------------------------------------------------------------------- orientation, metadata


def asymmetric_rgb(h=5, w=8) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillows_exif_transpose(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(asymmetric_rgb()).save(tmp_path / "o.png", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
    decoded = read_image(tmp_path / "o.png")
    assert np.array_equal(as_uint(still(decoded).rgb, 8), expected)
    assert probe_image(tmp_path / "o.png") == (expected.shape[1], expected.shape[0], 1)


@pytest.mark.parametrize("orientation", [6, 8])
def test_rotated_jpeg_is_upright_and_written_exif_says_orientation_1(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"
    Image.fromarray(asymmetric_rgb(6, 10)).save(tmp_path / "r.jpg", exif=exif, quality=100)
    with Image.open(tmp_path / "r.jpg") as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    decoded = read_image(tmp_path / "r.jpg")
    assert decoded.size == (6, 10)
    assert np.array_equal(as_uint(still(decoded).rgb, 8), expected)

    save(decoded.frames, tmp_path / "kept.jpg", fmt="JPEG", exif=decoded.exif, keep_metadata=True)
    written = Image.open(tmp_path / "kept.jpg").getexif()
    assert written.get(0x0112) == 1 and written.get(0x010F) == "TestCam"
    assert Image.open(tmp_path / "kept.jpg").size == (6, 10)

    save(decoded.frames, tmp_path / "plain.jpg", fmt="JPEG", exif=decoded.exif, keep_metadata=False)
    assert len(Image.open(tmp_path / "plain.jpg").getexif()) == 0


def test_rotated_16_bit_tiff_is_turned_once(tmp_path):
    src = RNG.integers(0, 65536, (6, 4, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "o.tif", src, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
    decoded = read_image(tmp_path / "o.tif")
    assert np.array_equal(as_uint(still(decoded).rgb, 16), np.rot90(src, -1))  # 6 = turn 90 degrees clockwise
    assert probe_image(tmp_path / "o.tif") == (6, 4, 1)


@pytest.mark.parametrize(
    ("fmt", "name", "bits"),
    [("PNG", "i.png", 8), ("JPEG", "i.jpg", 8), ("WEBP", "i.webp", 8), ("TIFF", "i.tif", 8), ("PNG", "i16.png", 16)]
    + [("TIFF", "i16.tif", 16)],
)
def test_icc_profile_is_carried(tmp_path, fmt, name, bits):
    Image.fromarray(asymmetric_rgb()).save(tmp_path / "src.png", icc_profile=SRGB)
    decoded = read_image(tmp_path / "src.png")
    assert decoded.icc_profile == SRGB
    save(decoded.frames, tmp_path / name, fmt=fmt, bit_depth=bits, icc_profile=decoded.icc_profile)
    if name == "i16.tif":
        with tifffile.TiffFile(tmp_path / name) as tif:
            assert tif.pages[0].tags["InterColorProfile"].value == SRGB
    else:
        assert Image.open(tmp_path / name).info.get("icc_profile") == SRGB


def test_rgb_profile_is_not_put_on_a_grey_output(tmp_path):
    save([Frame(rgb=np.zeros((3, 3, 3), np.float32), alpha=None)], tmp_path / "g.png", grey=True, icc_profile=SRGB)
    assert "icc_profile" not in Image.open(tmp_path / "g.png").info


def test_exif_kept_in_png_webp_and_16_bit_png(tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    Image.fromarray(asymmetric_rgb()).save(tmp_path / "src.jpg", exif=exif)
    decoded = read_image(tmp_path / "src.jpg")
    for name, fmt, bits in [("e.png", "PNG", 8), ("e.webp", "WEBP", 8), ("e16.png", "PNG", 16)]:
        save(decoded.frames, tmp_path / name, fmt=fmt, bit_depth=bits, exif=decoded.exif, keep_metadata=True)
        assert Image.open(tmp_path / name).getexif().get(0x010F) == "TestCam", name


# ------------------------------------------------------------------------------------------------ animation


def make_frames(mode="RGB"):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = []
    for c in colours:
        im = Image.new(mode, (6, 4), c + ((255,) if mode == "RGBA" else ()))
        if mode == "RGBA":
            im.putpixel((0, 0), (0, 0, 0, 0))
        frames.append(im)
    return frames


@pytest.mark.parametrize(("fmt", "name"), [("GIF", "a.gif"), ("WEBP", "a.webp"), ("PNG", "a.png")])
def test_animations_are_read_as_frames_and_written_back_animated(tmp_path, fmt, name):
    frames = make_frames()
    extra = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=[40, 80, 120], loop=0, **extra)
    assert probe_image(tmp_path / name) == (6, 4, 3)
    decoded = read_image(tmp_path / name)
    assert decoded.animated and decoded.loop == 0 and not decoded.has_alpha
    assert [f.duration_ms for f in decoded.frames] == [40, 80, 120]
    assert [as_uint(f.rgb, 8)[1, 1].tolist() for f in decoded.frames] == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]

    out = tmp_path / ("out." + name.split(".")[1])
    save(decoded.frames, out, fmt=fmt, quality=100, loop=decoded.loop)
    with Image.open(out) as im:
        assert im.n_frames == 3 and im.info.get("loop") == 0
        seen = []
        for i in range(3):
            im.seek(i)
            rgb = im.convert("RGB")
            seen.append((im.info.get("duration"), rgb.getpixel((1, 1))))
    assert seen == [(40, (255, 0, 0)), (80, (0, 255, 0)), (120, (0, 0, 255))]


def test_transparent_animated_gif_keeps_alpha(tmp_path):
    frames = make_frames("RGBA")
    frames[0].save(tmp_path / "t.gif", save_all=True, append_images=frames[1:], duration=50, disposal=2)
    decoded = read_image(tmp_path / "t.gif")
    assert decoded.has_alpha and decoded.loop is None
    assert all(f.alpha[0, 0] == 0 and f.alpha[1, 1] == 1 for f in decoded.frames)
    save(decoded.frames, tmp_path / "o.gif", fmt="GIF", loop=decoded.loop)
    with Image.open(tmp_path / "o.gif") as im:
        assert im.n_frames == 3 and "loop" not in im.info
        im.seek(2)
        rgba = im.convert("RGBA")
        assert rgba.getpixel((0, 0))[3] == 0 and rgba.getpixel((1, 1)) == (0, 0, 255, 255)


def test_animation_to_a_still_format_is_refused(tmp_path):
    frames = make_frames()
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    decoded = read_image(tmp_path / "a.gif")
    with pytest.raises(ImageWriteError, match=r"a\.gif: animated \(3 frames\) and JPEG cannot store animation"):
        output_format_for(decoded, "jpg", alpha_kept=False)
    with pytest.raises(ValueError, match="cannot store 3 frames"):
        imagefile.encode_image(io.BytesIO(), decoded.frames, grey=False, bit_depth=8, fmt="JPEG")


# --------------------------------------------------------------------------------------------------- bad input


def one_line_error(path, **kwargs) -> str:
    with pytest.raises(ImageReadError) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message[len(f"{path}: ") :]


def test_zero_byte_file(tmp_path):
    (tmp_path / "z.png").write_bytes(b"")
    assert one_line_error(tmp_path / "z.png") == "empty file (0 bytes)"


@pytest.mark.parametrize("name", ["t.png", "t.jpg", "t.webp", "t.gif"])
def test_truncated_file(tmp_path, name):
    Image.fromarray(RNG.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(tmp_path / name)
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert one_line_error(tmp_path / name).startswith("damaged or truncated image data (")


def test_text_named_jpg_missing_file_folder_and_unsupported_format(tmp_path):
    (tmp_path / "notes.jpg").write_text("hello, this is not a picture\n")
    assert one_line_error(tmp_path / "notes.jpg").startswith("not an image")
    assert one_line_error(tmp_path / "absent.png") == "no such file"
    (tmp_path / "dir.png").mkdir()
    assert one_line_error(tmp_path / "dir.png") == "is a folder, not an image"
    Image.new("RGB", (4, 4)).save(tmp_path / "x.ppm")
    assert one_line_error(tmp_path / "x.ppm").startswith("unsupported image format PPM")


def test_huge_and_too_small_images_name_the_size_and_the_way_out(tmp_path):
    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")
    cause = one_line_error(tmp_path / "big.png", max_pixels=50_000)
    assert cause == "300 x 200 pixels (0.1 MP) is over the limit of 0.1 MP; raise the limit with --max-pixels"
    with pytest.raises(ImageReadError, match=re.escape("over the limit")):
        probe_image(tmp_path / "big.png", max_pixels=50_000)
    assert read_image(tmp_path / "big.png", max_pixels=None).size == (300, 200)
    assert "too small (needs at least 256 on each side)" in one_line_error(tmp_path / "big.png", min_side=256)


def test_huge_animation_counts_every_frame(tmp_path):
    frames = make_frames()
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert "6 x 4 pixels x 3 frames" in one_line_error(tmp_path / "a.gif", max_pixels=60)


def test_limit_above_pillows_own_bomb_limit_is_honoured(tmp_path, monkeypatch):
    Image.new("L", (40, 30)).save(tmp_path / "w.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would refuse this file as a bomb
    assert read_image(tmp_path / "w.png", max_pixels=10_000).size == (40, 30)
    assert Image.MAX_IMAGE_PIXELS == 100


def test_wrong_extension_is_read_by_content_with_a_note(tmp_path):
    Image.fromarray(asymmetric_rgb()).save(tmp_path / "photo.png", format="JPEG")
    decoded = read_image(tmp_path / "photo.png")
    assert decoded.format == "JPEG" and any("content is JPEG" in n for n in decoded.notes)
    assert output_format_for(decoded, None, alpha_kept=False) == ("JPEG", "jpg", None)


# ----------------------------------------------------------------------------------------- output choices


def decoded_stub(path="in.jpeg", fmt="JPEG", bit_depth=8, frames=1) -> DecodedImage:
    frame = Frame(rgb=np.zeros((2, 2, 3), np.float32), alpha=None)
    return DecodedImage(
        path=imagefile.Path(path),
        format=fmt,
        frames=[frame] * frames,
        grey=False,
        bit_depth=bit_depth,
        icc_profile=None,
        exif=None,
        loop=None,
    )


def test_output_format_choices():
    assert output_format_for(decoded_stub(), None, alpha_kept=False) == ("JPEG", "jpeg", None)
    fmt, ext, note = output_format_for(decoded_stub(), None, alpha_kept=True)
    assert (fmt, ext) == ("PNG", "png") and "JPEG cannot store transparency" in note and "--alpha drop" in note
    assert output_format_for(decoded_stub(), "bmp", alpha_kept=True)[:2] == ("PNG", "png")
    assert output_format_for(decoded_stub("x.tif", "TIFF", 16), None, alpha_kept=False) == ("TIFF", "tif", None)
    fmt, ext, note = output_format_for(decoded_stub("x.png", "PNG", 16), "webp", alpha_kept=True)
    assert (fmt, ext) == ("WEBP", "webp") and "16-bit source written at 8 bits" in note
    assert output_format_for(decoded_stub("x.jpg", "MPO"), None, alpha_kept=False)[:2] == ("JPEG", "jpg")
    assert output_format_for(decoded_stub("a.gif", "GIF", frames=2), "png", alpha_kept=False)[:2] == ("PNG", "png")
    with pytest.raises(UsageError, match="unknown output format 'heic'"):
        output_format_for(decoded_stub(), "heic", alpha_kept=False)


def test_encoder_refuses_alpha_in_jpeg():
    frame = Frame(rgb=np.zeros((2, 2, 3), np.float32), alpha=np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="JPEG cannot store an alpha channel"):
        imagefile.encode_image(io.BytesIO(), [frame], grey=False, bit_depth=8, fmt="JPEG")


@pytest.mark.parametrize(("fmt", "name"), [("PNG", "o.png"), ("TIFF", "o.tif"), ("BMP", "o.bmp"), ("WEBP", "o.webp")])
def test_8_bit_lossless_round_trip(tmp_path, fmt, name):
    src = asymmetric_rgb(7, 9)
    frame = Frame(rgb=src.astype(np.float32) / 255, alpha=None)
    save([frame], tmp_path / name, fmt=fmt, quality=100)
    assert np.array_equal(np.asarray(Image.open(tmp_path / name).convert("RGB")), src)


def test_jpeg_quality_and_subsampling(tmp_path):
    gradient = np.linspace(0, 1, 64 * 64 * 3, dtype=np.float32).reshape(64, 64, 3)
    frame = Frame(rgb=gradient, alpha=None)
    save([frame], tmp_path / "hi.jpg", fmt="JPEG")
    save([frame], tmp_path / "lo.jpg", fmt="JPEG", quality=40)
    from PIL import JpegImagePlugin

    assert JpegImagePlugin.get_sampling(Image.open(tmp_path / "hi.jpg")) == 0  # 4:4:4 at the default 95
    assert JpegImagePlugin.get_sampling(Image.open(tmp_path / "lo.jpg")) == 2  # 4:2:0
    assert os.path.getsize(tmp_path / "lo.jpg") < os.path.getsize(tmp_path / "hi.jpg")


def test_float_input_is_clipped_and_nan_safe(tmp_path):
    rgb = np.array([[[-0.2, 1.3, np.nan], [0.5 / 255, 1.5 / 255, 0.25]]], np.float32)
    save([Frame(rgb=rgb, alpha=None)], tmp_path / "c.png")
    assert np.asarray(Image.open(tmp_path / "c.png")).tolist() == [[[0, 255, 0], [0, 2, 64]]]


# ------------------------------------------------------------------------------------------ fill_transparent


def test_fill_transparent_leaves_opaque_pixels_and_fills_with_neighbouring_colour():
    h, w = 40, 50
    rgb = np.zeros((h, w, 3), np.float32)  # black under the transparent part, as many editors store it
    alpha = np.zeros((h, w), np.float32)
    rgb[:, :20] = (1.0, 0.0, 0.0)
    rgb[:, 30:] = (0.0, 0.0, 1.0)
    alpha[:, :20] = 1.0
    alpha[:, 30:] = 1.0
    rgb[5, 19] = (0.3, 0.2, 0.1)  # an opaque odd pixel must survive untouched
    alpha[:, 20] = 0.5  # a semi-transparent edge keeps its colour too
    rgb[:, 20] = (0.9, 0.1, 0.0)

    filled = fill_transparent(rgb, alpha)
    visible = alpha > 0
    assert np.array_equal(filled[visible], rgb[visible])
    gap = filled[:, 21:30]
    assert np.all(gap.max(axis=2) > 0.4), "no black left in the transparent gap"
    assert np.all(gap[:, 0, 0] > 0.7) and np.all(gap[:, 0, 2] < 0.3)  # next to red: red
    assert np.all(gap[:, -1, 2] > 0.7) and np.all(gap[:, -1, 0] < 0.3)  # next to blue: blue
    assert np.all(np.isfinite(filled)) and filled.min() >= 0 and filled.max() <= 1


def test_fill_transparent_edge_cases():
    rgb = RNG.random((5, 7, 3), dtype=np.float32)
    assert fill_transparent(rgb, None) is rgb
    assert fill_transparent(rgb, np.ones((5, 7), np.float32)) is rgb
    nothing_visible = fill_transparent(rgb, np.zeros((5, 7), np.float32))
    assert np.all(np.isfinite(nothing_visible))
    one_dot = np.zeros((5, 7), np.float32)
    one_dot[2, 3] = 1
    filled = fill_transparent(rgb, one_dot)
    assert np.allclose(filled, rgb[2, 3], atol=1e-6)  # a single visible pixel colours everything


# -------------------------------------------------------------------------------------------- atomic writes


def test_write_image_atomic_leaves_only_the_final_file(tmp_path):
    frame = Frame(rgb=np.zeros((3, 3, 3), np.float32), alpha=None)
    save([frame], tmp_path / "out.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    mode = os.stat(tmp_path / "out.png").st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's 0600


def test_failed_write_leaves_no_temporary_and_no_partial_file(tmp_path, monkeypatch):
    frame = Frame(rgb=np.zeros((3, 3, 3), np.float32), alpha=None)
    seen = []

    def failing_encoder(dest, frames, **kwargs):
        dest.write(b"\x89PNG half of a file")
        seen.append([p.name for p in tmp_path.iterdir()])
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(imagefile, "encode_image", failing_encoder)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        save([frame], tmp_path / "new.png")
    assert list(tmp_path.iterdir()) == []
    assert re.fullmatch(r"\.new\.png\.[0-9a-f]{8}\.partial", seen[0][0])  # skipped by folder walks

    (tmp_path / "old.png").write_bytes(b"previous result")
    with pytest.raises(RuntimeError):
        save([frame], tmp_path / "old.png")
    assert [p.name for p in tmp_path.iterdir()] == ["old.png"]
    assert (tmp_path / "old.png").read_bytes() == b"previous result"


def test_unwritable_destination_is_one_clear_error(tmp_path):
    frame = Frame(rgb=np.zeros((3, 3, 3), np.float32), alpha=None)
    target = tmp_path / "missing-folder" / "out.png"
    with pytest.raises(ImageWriteError, match=re.escape(f"{target}: cannot write (No such file or directory)")):
        save([frame], target)


def test_quantize_integer_inputs_and_resize_alpha():
    assert imagefile.quantize(np.array([0, 1, 255], np.uint8), 16).tolist() == [0, 257, 65535]
    assert imagefile.quantize(np.array([0, 128, 129, 65535], np.uint16), 8).tolist() == [0, 0, 1, 255]
    step = np.zeros((8, 8), np.float32)
    step[:, 4:] = 1
    big = imagefile.resize_alpha(step, (32, 16))
    assert big.shape == (16, 32) and big.min() >= 0 and big.max() <= 1  # Lanczos overshoot clipped
    assert np.all(big[:, :12] < 0.05) and np.all(big[:, 20:] > 0.95)
