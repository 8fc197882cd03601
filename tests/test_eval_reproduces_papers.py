"""`srcli eval` reproduces published tables with official weights.

Every expected value below is a *published* number (or, where no paper prints one, the
calibration measured with the authors' code that ../shared/README.md records), never our own
output. Tolerances: 0.02 dB PSNR and 0.0005 SSIM, as the evaluation issue states. Data and
weights come from a local HTTP mirror of ../shared (no internet).
"""

from __future__ import annotations

import pytest

from srcli.eval.published import published_for
from srcli.eval.runner import evaluate

PSNR_TOL = 0.02
SSIM_TOL = 0.0005


def _published(model: str, dataset: str, scale: int) -> tuple[float, float | None]:
    rows = [row for _, row in published_for(model, dataset, scale) if row.results[dataset][1] is not None]
    assert rows, f"no published value for {model} {dataset} x{scale}"
    return rows[0].results[dataset]


@pytest.mark.parametrize(
    ("dataset", "scale"),
    [("set5", 2), ("set5", 3), ("set5", 4), ("set14", 2), ("set14", 4)],
)
@pytest.mark.slow
def test_imdn_matches_its_published_table(dataset, scale, shared_mirror):
    # IMDN rows as printed in MSRA-SR Table 1 and ASID Table 1 (38.00 / 0.9605 at Set5 x2, ...).
    want_psnr, want_ssim = _published("imdn", dataset, scale)
    result = evaluate("imdn", dataset, scale, device="cpu")
    assert result.psnr == pytest.approx(want_psnr, abs=PSNR_TOL)
    assert result.ssim == pytest.approx(want_ssim, abs=SSIM_TOL)
    assert len(result.images) == {"set5": 5, "set14": 14}[dataset] and not result.skipped


def test_the_published_imdn_values_are_the_ones_the_issue_names():
    assert _published("imdn", "set5", 2) == (38.00, 0.9605)
    assert _published("imdn", "set5", 4) == (32.21, 0.8948)
    assert _published("imdn", "set14", 2)[0] == 33.63
    assert _published("imdn", "set14", 4)[0] == 28.58


@pytest.mark.slow
def test_bicubic_set5_x4_matches_the_literature(shared_mirror):
    want_psnr, want_ssim = _published("bicubic", "set5", 4)  # 28.42 / 0.8104
    result = evaluate("bicubic", "set5", 4, device="cpu")
    assert result.psnr == pytest.approx(want_psnr, abs=PSNR_TOL)
    assert result.ssim == pytest.approx(want_ssim, abs=0.001)


# RLFN is described in the survey without a table; 32.24 dB is RLFN's published Set5 x4 PSNR
# (Kong et al., CVPRW 2022), which the evaluation issue names. The x2 and RLFN-S
# values are the authors'-code calibration in ../shared/README.md.
@pytest.mark.parametrize(
    ("model", "scale", "psnr", "ssim"),
    [("rlfn", 4, 32.24, 0.8953), ("rlfn", 2, 38.08, 0.9607), ("rlfn-s", 4, 32.25, 0.8955)],
)
@pytest.mark.slow
def test_rlfn_matches(model, scale, psnr, ssim, shared_mirror):
    result = evaluate(model, "set5", scale, device="cpu")
    assert result.psnr == pytest.approx(psnr, abs=PSNR_TOL)
    assert result.ssim == pytest.approx(ssim, abs=SSIM_TOL)


@pytest.mark.slow
def test_result_records_its_protocol(shared_mirror):
    result = evaluate("imdn", "set5", 4, device="cpu")
    p = result.protocol
    assert p["version"] == "1" and p["dtype"] == "fp32" and p["self_ensemble"] is False
    assert p["inference"] == "whole image"
    assert p["weights_sha256"] == "e660c38221147217a136debeb99eb304d62d9c0f73ac421ed66281b619719714"
    assert "imresize" in p["lr_source"] and "Y =" in p["channel"] and p["border_crop"].startswith("scale")
    assert result.published and result.published[0]["psnr"] == 32.21
