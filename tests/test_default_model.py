"""The embedded default model: shipped in the package, loads offline, scores what weights.toml reports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from srcli.engine.options import default_scale
from srcli.eval.runner import evaluate
from srcli.hub.cache import EMBEDDED_DIR, entry_path, sha256_file
from srcli.hub.loading import load_model
from srcli.hub.manifest import get_entry
from srcli.registry import DEFAULT_MODEL, get_model

DEFAULT_SCALE = default_scale(get_model(DEFAULT_MODEL))

#: Our eval's bicubic on Set5 (the literature's values, reproduced by tests/test_eval_reproduces_papers.py).
BICUBIC_SET5 = {2: 33.66, 3: 30.39, 4: 28.42}


def _reported_set5(scale: int) -> float:
    note = get_entry(f"{DEFAULT_MODEL}.x{scale}").note
    match = re.search(r"Set5 ([0-9.]+) dB", note)
    assert match, f"weights.toml's note for x{scale} states no Set5 PSNR: {note}"
    return float(match.group(1))


def test_default_is_embedded_and_pinned() -> None:
    spec = get_model(DEFAULT_MODEL)
    assert DEFAULT_SCALE in spec.weight_scales
    for scale in spec.weight_scales:
        entry = get_entry(spec.weights_key(scale))
        assert entry.embedded and entry.sha256
        path = entry_path(entry, Path("/nonexistent-cache"))
        assert path.parent == EMBEDDED_DIR and path.is_file()
        assert sha256_file(path) == entry.sha256 and path.stat().st_size == entry.size


def test_default_loads_offline_with_an_empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRCLI_CACHE_DIR", str(tmp_path / "empty"))
    loaded = load_model(DEFAULT_MODEL, DEFAULT_SCALE, offline=True)
    assert loaded.weights_path is not None and loaded.weights_path.parent == EMBEDDED_DIR
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").rglob("*.safetensors"))


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.slow
def test_default_scores_what_is_reported_and_beats_bicubic(shared_dir: Path, scale: int) -> None:
    """Set5 PSNR (Y) within 0.02 dB of the figure weights.toml reports, and well above bicubic."""
    result = evaluate(DEFAULT_MODEL, None, scale, data_dir=shared_dir / "data" / "benchmarks" / "Set5", offline=True)
    reported = _reported_set5(scale)
    assert abs(result.psnr - reported) <= 0.02
    assert result.psnr - BICUBIC_SET5[scale] >= 1.5
