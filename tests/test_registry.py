"""The registry is the one source of model facts: check those facts against the code and weights.toml."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from srcli.errors import NotImplementedModelError, UnknownModelError, UnsupportedScaleError, WeightsError
from srcli.hub.loading import load_model
from srcli.hub.manifest import load_manifest, parse_manifest
from srcli.registry import get_model, list_models

REPO = Path(__file__).resolve().parents[1]


def test_every_model_the_brief_names_is_registered():
    names = {s.name for s in list_models()}
    assert {
        "rgt",
        "rgt-s",
        "asid",
        "asid-d8",
        "msra-sr",
        "msra-sr-light",
        "imdn",
        "rlfn",
        "rlfn-s",
        "bicubic",
    } <= names


def test_names_and_aliases_are_unique_and_lowercase():
    seen: set[str] = set()
    for spec in list_models():
        for key in (spec.name, *spec.aliases):
            assert key == key.lower()
            assert key not in seen, key
            seen.add(key)


def test_lookup_is_case_insensitive_and_accepts_aliases():
    assert get_model("RGT-S").name == "rgt-s"
    assert get_model("rgt_s").name == "rgt-s"


def test_unknown_model_suggests_the_closest_name():
    with pytest.raises(UnknownModelError, match="did you mean 'asid-d8'"):
        get_model("asid-d9")


def test_unknown_scale_is_a_usage_error():
    with pytest.raises(UnsupportedScaleError, match="no x8 variant"):
        get_model("imdn").check_scale(8)


def test_every_pinned_scale_has_a_weights_entry_and_every_entry_a_model():
    manifest = load_manifest()
    wanted = {spec.weights_key(s) for spec in list_models() for s in spec.weight_scales}
    assert wanted == set(manifest)


def test_manifest_entries_are_complete():
    for entry in load_manifest().values():
        assert entry.licence and entry.source, entry.key
        assert entry.urls or entry.manual or entry.embedded, entry.key
        if entry.embedded:  # shipped in the package: always pinned
            assert entry.sha256 and entry.size, entry.key
        if entry.sha256:
            assert len(entry.sha256) == 64 and entry.size, entry.key


def test_weights_toml_matches_the_shared_manifest(shared_dir):
    """Every hash and size we pin is the one recorded beside the real upstream files."""
    import tomllib

    shared = tomllib.loads((shared_dir / "weights" / "MANIFEST.toml").read_text())
    ours = load_manifest()
    for model, scales in shared.items():
        for scale, facts in scales.items():
            entry = ours[f"{model}.{scale}"]
            assert entry.urls[0] == facts["url"], entry.key
            assert entry.sha256 == facts.get("sha256"), entry.key
            assert entry.size == facts.get("size"), entry.key


def test_manifest_parser_names_a_broken_entry():
    with pytest.raises(WeightsError, match=r"\[foo.x2\] lacks 'file'"):
        parse_manifest('[foo.x2]\nurls = ["http://x"]\n')


@pytest.mark.parametrize("spec", [s for s in list_models() if s.implemented], ids=lambda s: s.name)
@pytest.mark.slow
def test_parameter_counts_match_the_built_modules(spec):
    for scale in spec.scales:
        if scale not in spec.params:
            continue
        module = spec.build(scale)
        assert sum(p.numel() for p in module.parameters()) == spec.params[scale], (spec.name, scale)


def test_planned_model_fails_clearly():
    # A spec without an architecture (built here, so the test does not depend on which models are pending).
    planned = replace(get_model("msra-sr"), arch=None, unavailable="issue #8")
    with pytest.raises(NotImplementedModelError, match=r"not implemented yet \(issue #8\)"):
        planned.build(4)


def test_model_without_weights_at_a_scale_says_so(cache):
    with pytest.raises(WeightsError, match=r"no published weights for 'rlfn' x3.*--weights"):
        load_model("rlfn", 3, offline=True)


def test_bicubic_needs_no_weights(cache):
    loaded = load_model("bicubic", 4, offline=True)
    assert loaded.weights_path is None
    import torch

    assert loaded.module(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)
