"""The published results tables: well-formed data, every number traced back to the seed text."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from srcli.errors import UnknownModelError, UsageError
from srcli.eval.published import (
    DATASETS,
    PUBLISHED_TOML,
    PublishedRow,
    PublishedTable,
    get_table,
    load_tables,
    normalize_dataset,
    published_for,
)
from srcli.registry import get_model

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Tables whose rows are printed one per line in the seed: label, scale, then PSNR/SSIM cells.
ROW_TABLES = ("rgt-table2", "msra-sr-table1", "msra-sr-table2", "asid-table1")
EXPECTED_ROWS = {
    "rgt-table2": 45,
    "rgt-table3": 8,
    "msra-sr-table1": 21,
    "msra-sr-table2": 41,
    "msra-sr-table3": 4,
    "asid-table1": 36,
    "asid-table2": 6,
    "bicubic-reference": 3,
}

# A number cell (not part of "222.8G", "1,592K" or "2018a") or a "-" cell (not the "-" of "HPUN-L").
_CELL = re.compile(r"(?<![\w.,])(\d+\.\d+|-)(?![\w.])")
# A scale marker as the extractions print it: "×\times×2", "$\times 2$", "×2absent2".
_SCALE = re.compile(r"×\s?(\d)(?!\d)|\\times\s?(\d)(?!\d)")


def _seed_lines(shared_dir: Path, table: PublishedTable) -> list[str]:
    assert table.seed is not None
    return (shared_dir / table.seed).read_text(encoding="utf-8").replace("\xa0", " ").splitlines()


def _has_label(line: str, label: str) -> bool:
    return re.search(r"(?<![\w+-])" + re.escape(label) + r"(?![\w+-])", line) is not None


def _scale_at(lines: list[str], index: int) -> int | None:
    """The scale printed on line ``index`` or, failing that, on the nearest line above (a block header)."""
    for line in reversed(lines[max(0, index - 15) : index + 1]):
        m = _SCALE.search(line)
        if m:
            return int(m.group(1) or m.group(2))
    return None


def _expected_cells(row: PublishedRow, ncols: int) -> list[str]:
    cells: list[str] = []
    for dataset in DATASETS[:ncols]:
        psnr, ssim = row.results.get(dataset, (None, None))
        cells.append("-" if psnr is None else f"{psnr:.2f}")
        cells.append("-" if ssim is None else f"{ssim:.4f}")
    return cells


def _psnr(row: PublishedRow, dataset: str) -> str:
    return f"{row.results[dataset][0]:.2f}"


def _ncols(table: PublishedTable) -> int:
    return 5 if any("manga109" in r.results for r in table.rows) else 4


def _find_row_line(lines: list[str], table: PublishedTable, row: PublishedRow) -> int:
    """Index of the one seed line printing this row exactly (label, training set, scale, every cell)."""
    ncols = _ncols(table)
    want = _expected_cells(row, ncols)
    hits = []
    for i, line in enumerate(lines):
        if not _has_label(line, row.label):
            continue
        if row.training_data and f"\t{row.training_data}\t" not in line:
            continue
        cells = _CELL.findall(line.replace("/", " "))
        if cells[-2 * ncols :] == want and _scale_at(lines, i) == (row.printed_scale or row.scale):
            hits.append(i)
    assert len(hits) == 1, f"{table.id}: {row.label} x{row.scale} {want} found on lines {hits}"
    return hits[0]


def _row(table_id: str, method: str, scale: int, training_data: str | None = None) -> PublishedRow:
    rows = [
        r
        for r in get_table(table_id).rows
        if (r.method, r.scale) == (method, scale) and training_data in (None, r.training_data)
    ]
    assert len(rows) == 1, rows
    return rows[0]


# ---------------------------------------------------------------- the data file itself


def test_toml_loads_with_the_expected_tables_and_row_counts():
    tables = load_tables()
    assert {tid: len(t.rows) for tid, t in tables.items()} == EXPECTED_ROWS
    assert PUBLISHED_TOML.name == "published.toml" and PUBLISHED_TOML.is_file()


def test_table_ids_are_unique_in_the_file():
    with PUBLISHED_TOML.open("rb") as fh:
        ids = [t["id"] for t in tomllib.load(fh)["table"]]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", tid) for tid in ids)


def test_every_model_is_a_registered_name():
    models = {r.model for t in load_tables().values() for r in t.rows if r.model}
    for name in models:
        assert get_model(name).name == name  # the canonical name, not an alias
    assert {"imdn", "bicubic", "rgt", "rgt-s", "asid", "asid-d8", "msra-sr", "msra-sr-light"} <= models


def test_values_are_in_range_unless_flagged():
    for table in load_tables().values():
        for row in table.rows:
            if row.flagged:
                continue
            for dataset, (psnr, ssim) in row.results.items():
                assert 15 <= psnr <= 45, (table.id, row.method, row.scale, dataset, psnr)
                assert ssim is None or 0 < ssim < 1, (table.id, row.method, row.scale, dataset, ssim)


def test_rows_are_unique_and_self_ensemble_matches_the_plus():
    for table in load_tables().values():
        keys = [(r.method, r.scale, r.training_data) for r in table.rows]
        assert len(keys) == len(set(keys)), table.id
        for row in table.rows:
            assert row.self_ensemble == row.method.endswith("+"), (table.id, row.method)
            assert row.scale in (2, 3, 4)


def test_flagged_rows_are_the_known_seed_oddities():
    flagged = {(t.id, r.method, r.scale) for t in load_tables().values() for r in t.rows if r.flagged}
    assert flagged == {("msra-sr-table1", "HPUN-L", 3), ("asid-table1", "MAFFSRN", 4)}
    hpun = _row("msra-sr-table1", "HPUN-L", 3)
    assert hpun.printed_scale == 2 and hpun.params == "723K"
    assert _row("asid-table1", "MAFFSRN", 4).results["set14"] == (26.62, 0.7822)


def test_psnr_only_tables_repeat_the_full_tables():
    full = get_table("rgt-table2")
    for row in get_table("rgt-table3").rows:
        (twin,) = [r for r in full.rows if r.method == row.method and r.scale == 4]
        for dataset, (psnr, ssim) in row.results.items():
            assert ssim is None and twin.results[dataset][0] == psnr
    for row in get_table("asid-table2").rows:
        assert row.results["set14"][0] == _row("asid-table1", row.method, 4).results["set14"][0]
        assert row.params == _row("asid-table1", row.method, 4).params
    table2 = get_table("msra-sr-table2").rows
    for row in get_table("msra-sr-table3").rows:
        assert any(
            r.method == row.method and r.scale == 4 and all(r.results[d][0] == row.results[d][0] for d in row.results)
            for r in table2
        ), row.method


def test_bicubic_reference_is_the_literature_values():
    table = get_table("bicubic-reference")
    assert table.seed is None and "literature" in table.caption and "RCAN" in table.source
    expected = {
        2: [(33.66, 0.9299), (30.24, 0.8688), (29.56, 0.8431), (26.88, 0.8403), (30.80, 0.9339)],
        3: [(30.39, 0.8682), (27.55, 0.7742), (27.21, 0.7385), (24.46, 0.7349), (26.95, 0.8556)],
        4: [(28.42, 0.8104), (26.00, 0.7027), (25.96, 0.6675), (23.14, 0.6577), (24.89, 0.7866)],
    }
    for row in table.rows:
        assert row.model == "bicubic"
        assert [row.results[d] for d in DATASETS] == expected[row.scale]


# ---------------------------------------------------------------- the loader


def test_published_for_imdn_set5_x2():
    hits = published_for("imdn", "set5", 2)
    assert [t.id for t, _ in hits] == ["msra-sr-table1", "asid-table1"]
    assert {r.results["set5"] for _, r in hits} == {(38.00, 0.9605)}


def test_published_for_accepts_aliases_and_dataset_spellings():
    hits = published_for("msra", "BSD100", 4)  # alias of msra-sr; BSD100 is b100
    assert [(t.id, r.training_data) for t, r in hits] == [
        ("msra-sr-table2", "DIV2K"),
        ("msra-sr-table2", "DIV2K+Flickr2K"),
    ]
    assert [r.results["b100"] for _, r in hits] == [(27.86, 0.7477), (27.93, 0.7493)]
    assert published_for("bic", "Set14", 3)[0][1].results["set14"] == (27.55, 0.7742)
    # Manga109 is printed by RGT Tables 2 and 3 (PSNR only in Table 3).
    assert [r.results["manga109"] for _, r in published_for("rgt", "manga109", 4)] == [
        (32.50, 0.9291),
        (32.50, None),
    ]


def test_published_for_self_ensemble_rows():
    plain = published_for("rgt", "set5", 2)
    plus = published_for("rgt", "set5", 2, self_ensemble=True)
    assert [r.method for _, r in plain] == ["RGT"] and [r.method for _, r in plus] == ["RGT+"]
    assert plus[0][1].results["set5"] == (38.62, 0.9629)


def test_published_for_models_without_published_values():
    assert published_for("rlfn", "set5", 2) == []  # no seed prints RLFN numbers
    assert published_for("asid", "manga109", 2) == []  # ASID Table 1 has no Manga109 column


def test_unknown_names_are_usage_errors():
    with pytest.raises(UnknownModelError):
        published_for("not-a-model", "set5", 2)
    with pytest.raises(UsageError, match="unknown dataset"):
        published_for("imdn", "div2k", 2)
    with pytest.raises(UsageError, match="did you mean 'rgt-table2'"):
        get_table("rgt-tabel2")
    assert normalize_dataset(" Urban100 ") == "urban100"
    assert get_table("RGT-Table2").id == "rgt-table2"


def test_malformed_files_are_rejected(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[table]]\nid = "x"\npaper = "p"\nsource = "s"\ncaption = "c"\n'
        '[[table.row]]\nmethod = "M"\nscale = 2\nresults = { set6 = [30.0, 0.9] }\n'
    )
    with pytest.raises(ValueError, match="unknown dataset key 'set6'"):
        load_tables(bad)
    bad.write_text(bad.read_text().replace("set6", "set5").replace("scale = 2", "scale = 2\nbogus = 1"))
    with pytest.raises(ValueError, match="unknown keys"):
        load_tables(bad)


def test_loading_imports_no_torch():
    code = (
        "import sys; from srcli.eval.published import load_tables, published_for; "
        "load_tables(); published_for('imdn', 'set5', 2); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- against the seed text


@pytest.mark.parametrize("table_id", ROW_TABLES)
def test_every_row_is_printed_in_the_seed(shared_dir: Path, table_id: str):
    """Each row's label, training set, scale and every PSNR/SSIM cell, in column order, on one seed line."""
    table = get_table(table_id)
    lines = _seed_lines(shared_dir, table)
    found = {_find_row_line(lines, table, row) for row in table.rows}
    assert len(found) == len(table.rows)  # no two rows read from the same line


@pytest.mark.parametrize(
    ("table_id", "pattern"),
    [
        ("rgt-table2", r" ×\\times×\d( \d+\.\d+){10}$"),
        ("msra-sr-table1", r"^[^\t]+\t\$\\times \d\$\t[\d,]+K\t"),
        ("msra-sr-table2", r"^[^\t]+\t\$\\times \d\$\t(DIV2K|DIV2K\+Flickr2K|ImageNet)\t"),
        ("asid-table1", r" \d+K( \d+\.\d+/\d+\.\d+){4}$"),
    ],
)
def test_no_seed_row_is_missing(shared_dir: Path, table_id: str, pattern: str):
    """Every data line the seed prints for the table is encoded (the row count matches)."""
    lines = _seed_lines(shared_dir, get_table(table_id))
    assert sum(1 for line in lines if re.search(pattern, line)) == len(get_table(table_id).rows)


def test_transposed_psnr_tables_match_the_seed(shared_dir: Path):
    rgt = _seed_lines(shared_dir, get_table("rgt-table3"))
    i = next(k for k, line in enumerate(rgt) if line.startswith("Method EDSR RCAN HAN"))
    params, flops, urban, manga = (rgt[i + k].split()[-8:] for k in (1, 2, 3, 4))
    for j, row in enumerate(get_table("rgt-table3").rows):
        assert row.label in rgt[i]
        assert (row.params, row.flops) == (params[j] + "M", flops[j] + "G")
        assert (_psnr(row, "urban100"), _psnr(row, "manga109")) == (urban[j], manga[j])

    msra = _seed_lines(shared_dir, get_table("msra-sr-table3"))
    i = next(k for k, line in enumerate(msra) if line.startswith("Method\tRCAN\tSwinIR"))
    header, params, macs, urban, manga = (msra[i + k].split("\t")[1:] for k in range(5))
    for j, row in enumerate(get_table("msra-sr-table3").rows):
        assert row.label == header[j]
        assert (row.params, row.flops) == (params[j] + "M", macs[j] + "G")
        assert (_psnr(row, "urban100"), _psnr(row, "manga109")) == (urban[j], manga[j])

    asid = _seed_lines(shared_dir, get_table("asid-table2"))
    for row in get_table("asid-table2").rows:
        printed = f"{row.label} {row.params} {row.flops} {row.results['set14'][0]:.2f}"
        assert sum(1 for line in asid if line.endswith(printed) and _has_label(line, row.label)) == 1


@pytest.mark.parametrize(
    ("table_id", "method", "scale", "dataset", "printed", "training_data"),
    [
        ("rgt-table2", "RGT", 4, "set5", "33.12 0.9060", None),
        ("rgt-table2", "RGT+", 2, "urban100", "34.63 0.9474", None),
        ("rgt-table2", "RGT-S", 3, "manga109", "35.39 0.9548", None),
        ("msra-sr-table1", "IMDN", 4, "manga109", "30.45\t0.9075", None),
        ("msra-sr-table1", "MSRA-SR", 2, "urban100", "32.98\t0.9358", None),
        ("msra-sr-table2", "MSRA-SR+", 4, "manga109", "32.41\t0.9280", "DIV2K+Flickr2K"),
        ("msra-sr-table2", "IPT", 3, "set5", "34.81\t-", "ImageNet"),
        ("asid-table1", "ASID", 2, "set5", "38.17/0.9613", None),
        ("asid-table1", "ASID-D8", 4, "urban100", "26.89/0.8096", None),
        ("asid-table1", "IMDN", 2, "set5", "38.00/0.9605", None),
    ],
)
def test_spot_checks_against_the_seed(
    shared_dir: Path,
    table_id: str,
    method: str,
    scale: int,
    dataset: str,
    printed: str,
    training_data: str | None,
):
    """Hand-picked cells: the encoded value, and the same digits on the row's line in the seed."""
    row = _row(table_id, method, scale, training_data)
    psnr, ssim = row.results[dataset]
    sep = next(c for c in printed if c in " \t/")
    assert printed == f"{psnr:.2f}{sep}{'-' if ssim is None else f'{ssim:.4f}'}"
    lines = _seed_lines(shared_dir, get_table(table_id))
    assert any(printed in line and _has_label(line, row.label) for line in lines)


def test_imdn_set5_x2_is_printed_by_both_seeds(shared_dir: Path):
    msra = (shared_dir / "seeds" / "msra-sr-iccv2023.md").read_text(encoding="utf-8")
    asid = (shared_dir / "seeds" / "asid-aaai2025.txt").read_text(encoding="utf-8")
    assert "IMDN [28]\t$\\times 2$\t694K\t158.8G\t38.00\t0.9605\t" in msra
    assert "\nIMDN 694K 38.00/0.9605 " in asid
