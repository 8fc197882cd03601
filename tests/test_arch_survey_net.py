"""SurveyNet follows the survey's two flowcharts, and its registry entry builds, counts and loads it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from srcli.archs.survey_net import MIN_INPUT_SIZE, SurveyNet
from srcli.registry import get_model


def _expected_params(c: int, n: int, scale: int, esa: int = 16, reduction: int = 16) -> int:
    """Parameters of the flowcharts, layer by layer (weights + biases)."""

    def conv(cin: int, cout: int, k: int) -> int:
        return cin * cout * k * k + cout

    hidden = max(c // reduction, 4)
    block = 3 * conv(c, c, 3) + conv(3 * c, c, 1) + conv(c, hidden, 1) + conv(hidden, c, 1)
    esa_params = conv(c, esa, 1) + conv(esa, esa, 1) + 2 * conv(esa, esa, 3) + conv(esa, c, 1)
    return conv(3, c, 3) + n * block + conv(n * c, c, 1) + esa_params + conv(c, 3 * scale * scale, 3)


def _reference_forward(m: SurveyNet, x: torch.Tensor) -> torch.Tensor:
    """The survey's flowcharts written out with functional ops on the module's own weights."""

    def conv(layer: torch.nn.Conv2d, t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, layer.weight, layer.bias, stride=layer.stride, padding=layer.padding)

    f0 = F.relu(conv(m.head, x))  # Conv 3x3, 3 -> C, + ReLU: shallow features
    outs, f = [], f0
    for blk in m.blocks:
        f1 = F.relu(conv(blk.conv1, f))
        f2 = F.relu(conv(blk.conv2, f1))
        f3 = F.relu(conv(blk.conv3, f2))
        fused = conv(blk.fuse, torch.cat([f1, f2, f3], 1))  # concat F1, F2, F3 -> 1x1 -> C
        gate = torch.sigmoid(conv(blk.ca.up, F.relu(conv(blk.ca.down, fused.mean((2, 3), keepdim=True)))))
        f = fused * gate + f  # channel attention, then the residual add
        outs.append(f)
    g = conv(m.fuse, torch.cat(outs, 1))  # all block outputs -> 1x1 fusion
    e = m.esa
    r = conv(e.conv1, g)
    c = F.max_pool2d(conv(e.conv2, r), 7, 3)
    c = F.interpolate(conv(e.conv3, c), size=g.shape[-2:], mode="bilinear", align_corners=False)
    g = g * torch.sigmoid(conv(e.conv4, c + conv(e.conv_f, r)))  # ESA
    return F.pixel_shuffle(conv(m.upsampler[0], g + f0), m.scale)  # long skip, 3x3 -> 3 s^2, shuffle


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_matches_the_flowcharts(scale: int) -> None:
    torch.manual_seed(scale)
    m = SurveyNet(num_features=16, num_blocks=3, scale=scale).eval()
    x = torch.rand(2, 3, 19, 23)
    with torch.no_grad():
        y = m(x)
        ref = _reference_forward(m, x)
    assert y.shape == (2, 3, 19 * scale, 23 * scale)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("c", "n"), [(16, 2), (48, 4), (64, 6)])
def test_parameter_count_follows_the_layers(c: int, n: int) -> None:
    for scale in (2, 3, 4):
        m = SurveyNet(num_features=c, num_blocks=n, scale=scale)
        assert sum(p.numel() for p in m.parameters()) == _expected_params(c, n, scale)


def test_registry_entry_counts_the_registered_size() -> None:
    spec = get_model("hgsr")
    assert spec.name == "survey-net"
    for scale in spec.scales:
        c, n = spec.arch_kwargs["num_features"], spec.arch_kwargs["num_blocks"]
        assert spec.params[scale] == _expected_params(c, n, scale)
    assert spec.min_size == MIN_INPUT_SIZE


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    m = SurveyNet(num_features=16, num_blocks=2, scale=2)
    m(torch.rand(1, 3, 20, 20)).abs().mean().backward()
    unused = [name for name, p in m.named_parameters() if p.grad is None]  # every layer is on the path
    assert not unused


def test_too_small_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least 15x15"):
        SurveyNet(scale=2)(torch.rand(1, 3, 14, 30))


def test_loads_from_a_safetensors_file_through_the_registry(tmp_path) -> None:
    from safetensors.torch import save_file

    from srcli.hub.loading import load_model

    torch.manual_seed(1)
    src = get_model("survey-net").build(3)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    loaded = load_model("survey-net", 3, weights=path)
    x = torch.rand(1, 3, 16, 17)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), src.eval()(x))
