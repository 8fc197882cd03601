"""Reading images the way the benchmark protocol needs: grey and palette expanded, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from srcli.errors import ImageReadError
from srcli.io.images import read_rgb_uint8


def test_grey_image_is_expanded_to_three_equal_channels(tmp_path):
    grey = (np.arange(48, dtype=np.uint8) * 5).reshape(6, 8)
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    rgb = read_rgb_uint8(tmp_path / "g.png")
    assert rgb.shape == (3, 6, 8) and rgb.dtype == torch.uint8
    for c in range(3):
        assert torch.equal(rgb[c], torch.from_numpy(grey))


def test_palette_image_is_converted(tmp_path):
    im = Image.new("P", (4, 3))
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    im.putpixel((1, 1), 1)
    im.save(tmp_path / "p.png")
    rgb = read_rgb_uint8(tmp_path / "p.png")
    assert rgb[:, 0, 0].tolist() == [10, 20, 30] and rgb[:, 1, 1].tolist() == [200, 100, 50]


def test_alpha_is_dropped_and_16_bit_is_rounded(tmp_path):
    Image.new("RGBA", (5, 5), (1, 2, 3, 4)).save(tmp_path / "a.png")
    assert read_rgb_uint8(tmp_path / "a.png")[:, 0, 0].tolist() == [1, 2, 3]
    Image.fromarray(np.full((4, 4), 257 * 77, np.uint16)).save(tmp_path / "d.png")
    assert read_rgb_uint8(tmp_path / "d.png").unique().tolist() == [77]


def test_shared_set14_grey_images_become_rgb(shared_dir):
    bridge = read_rgb_uint8(shared_dir / "data/benchmarks/Set14/bridge.png")  # stored single-channel
    assert bridge.shape[0] == 3 and torch.equal(bridge[0], bridge[2])


@pytest.mark.parametrize(("content", "cause"), [(b"", "not a readable image"), (b"hello", "not a readable image")])
def test_unreadable_files_name_the_file_and_cause(tmp_path, content, cause):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=rf"bad\.png: {cause}"):
        read_rgb_uint8(path)


def test_truncated_and_missing(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"t\.png: cannot decode"):
        read_rgb_uint8(tmp_path / "t.png")
    with pytest.raises(ImageReadError, match="no such file"):
        read_rgb_uint8(tmp_path / "absent.png")
