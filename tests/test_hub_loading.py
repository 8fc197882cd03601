"""Loading official checkpoints through the registry: download from a local server, strict load, safety."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from srcli.errors import CheckpointMismatchError, WeightsError
from srcli.hub.checkpoint import load_strict, read_checkpoint, unwrap_state_dict
from srcli.hub.loading import load_model
from srcli.registry import get_model

OFFICIAL = [
    ("imdn", 2, "IMDN_x2.pth"),
    ("imdn", 3, "IMDN_x3.pth"),
    ("imdn", 4, "IMDN_x4.pth"),
    ("rlfn", 2, "rlfn_x2.pth"),
    ("rlfn", 4, "rlfn_x4.pth"),
    ("rlfn-s", 2, "rlfn_s_x2.pth"),
    ("rlfn-s", 4, "rlfn_s_x4.pth"),
]


@pytest.mark.parametrize(("name", "scale", "file"), OFFICIAL)
def test_official_checkpoint_downloads_and_loads_strictly(
    name, scale, file, shared_dir, file_server, cache, monkeypatch
):
    body = (shared_dir / "weights" / file).read_bytes()
    file_server.add(f"/mirror/weights/{name}.x{scale}/{file}", body)
    monkeypatch.setenv("SRCLI_MIRRORS", file_server.url("/mirror"))
    loaded = load_model(name, scale)
    assert loaded.weights_sha256 == hashlib.sha256(body).hexdigest()
    assert loaded.weights_path.parent.parent == cache / "weights"
    assert not loaded.module.training
    # Second load is served from the cache, offline.
    again = load_model(name, scale, offline=True)
    assert again.weights_path == loaded.weights_path
    assert len(file_server.routes[f"/mirror/weights/{name}.x{scale}/{file}"].requests) == 1


def test_local_weights_file_overrides_the_pinned_one(shared_dir, cache):
    loaded = load_model("imdn", 4, weights=shared_dir / "weights" / "IMDN_x4.pth", offline=True)
    assert loaded.weights_path == shared_dir / "weights" / "IMDN_x4.pth"
    assert not (cache / "weights").exists()


def test_wrong_checkpoint_gets_a_readable_mismatch_report(shared_dir, cache):
    with pytest.raises(CheckpointMismatchError) as info:
        load_model("rlfn", 4, weights=shared_dir / "weights" / "IMDN_x4.pth", offline=True)
    message = str(info.value)
    assert "IMDN_x4.pth does not fit RLFN" in message
    assert "missing:" in message and "unexpected:" in message
    assert len(message.splitlines()) == 1


def test_misshaped_keys_are_named(shared_dir):
    state = unwrap_state_dict(read_checkpoint(shared_dir / "weights" / "rlfn_s_x4.pth"), (), "module.")
    module = get_model("rlfn").build(4)  # 52 channels; RLFN-S has 48
    with pytest.raises(
        CheckpointMismatchError, match=r"mis-shaped: block_1\.c1_r\.bias \(file \(48,\) vs model \(52,\)\)"
    ):
        load_strict(module, state, "rlfn_s_x4.pth")


def test_wrapped_safetensors_and_params_checkpoints_load(shared_dir, tmp_path):
    from safetensors.torch import save_file

    raw = torch.load(shared_dir / "weights" / "IMDN_x2.pth", map_location="cpu", weights_only=True)
    wrapped = tmp_path / "basicsr.pth"
    torch.save({"params": raw, "iter": 5}, wrapped)
    plain = {k.removeprefix("module."): v.contiguous() for k, v in raw.items()}
    st = tmp_path / "imdn.safetensors"
    save_file(plain, str(st))
    for path in (wrapped, st):
        loaded = load_model("imdn", 2, weights=path, offline=True)
        assert torch.equal(loaded.module.state_dict()["upsampler.0.weight"], plain["upsampler.0.weight"])


def test_params_ema_is_preferred_over_params():
    a, b = torch.zeros(1), torch.ones(1)
    assert unwrap_state_dict({"params": {"w": a}, "params_ema": {"w": b}}, ("params_ema", "params"))["w"] is b


def test_pickled_objects_are_never_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"params": Evil()}, path)
    with pytest.raises(WeightsError, match="weights_only=True") as info:
        read_checkpoint(path)
    # The unpickler's own reason, not PyTorch's advice to turn the safety off.
    assert "holds Python objects other than tensors (Unsupported global" in str(info.value)
    assert "In PyTorch 2.6" not in str(info.value)


def test_garbage_file_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pth: not a PyTorch"):
        read_checkpoint(path)
    with pytest.raises(WeightsError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "absent.pth")


def _not_checkpoints(shared: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Real files people pass to --weights by mistake, and what the error must call them."""
    text = tmp_path / "notes.txt"
    text.write_text("RGT x4 weights: see the Drive folder\n", encoding="utf-8")
    html = tmp_path / "RGT_x2.pth"  # what a download that got Drive's quota page would hold
    html.write_text("<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head></html>")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    return {
        "png": (shared / "data" / "benchmarks" / "Set5" / "bird.png", "it is a PNG image"),
        "text": (text, "it is a text file ('RGT x4 weights: see the Drive folder')"),
        "html": (html, "it is an HTML page"),
        "empty": (empty, "it is an empty file"),
    }


@pytest.mark.parametrize("kind", ["png", "text", "html", "empty"])
def test_weights_that_are_not_a_checkpoint_say_so_in_one_line(shared_dir, tmp_path, kind):
    path, what = _not_checkpoints(shared_dir, tmp_path)[kind]
    with pytest.raises(WeightsError) as info:
        load_model("imdn", 4, weights=path, offline=True)
    message = str(info.value)
    assert message.startswith(f"{path}: not a PyTorch (.pth/.pt) or safetensors checkpoint: {what}")
    assert len(message.splitlines()) == 1
    assert "101" not in message and "Unsupported operand" not in message and "In PyTorch 2.6" not in message


def test_a_safetensors_file_is_read_by_its_content_whatever_its_suffix(shared_dir, tmp_path):
    source = Path(__file__).resolve().parents[1] / "srcli" / "weights" / "survey-net_x4.safetensors"
    renamed = tmp_path / "survey-net_x4.pth"
    renamed.write_bytes(source.read_bytes())
    assert read_checkpoint(renamed).keys() == read_checkpoint(source).keys()
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(source.read_bytes()[:1000])
    with pytest.raises(WeightsError, match=r"cut.safetensors: not a PyTorch .* a truncated safetensors file"):
        read_checkpoint(truncated)


def test_checkpoint_without_tensors_is_refused():
    with pytest.raises(WeightsError, match="no state dict of tensors"):
        unwrap_state_dict({"params": {"w": "text"}}, ("params",))


def test_unused_param_file_path_does_not_exist_check(tmp_path: Path):
    with pytest.raises(WeightsError, match="no such checkpoint"):
        load_model("imdn", 2, weights=tmp_path / "missing.pth", offline=True)
