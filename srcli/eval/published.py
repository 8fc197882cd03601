"""Published results tables: the PSNR/SSIM rows of the papers, as data, for "ours vs published".

The numbers live in ``published.toml`` next to this module (shipped in the wheel), copied digit for
digit from the text of each paper in ``../shared/seeds``; suspicious values are kept as printed
and explained in the row's ``flags``. This module only reads that file: no torch import.

>>> [(t.id, r.results["set5"]) for t, r in published_for("imdn", "Set5", 2)]  # doctest: +SKIP
[('msra-sr-table1', (38.0, 0.9605)), ('asid-table1', (38.0, 0.9605))]
"""

from __future__ import annotations

import difflib
import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srcli.errors import UnknownDatasetError, UsageError
from srcli.eval.datasets import BENCHMARKS, resolve_dataset_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "DATASETS",
    "PUBLISHED_TOML",
    "PublishedRow",
    "PublishedTable",
    "get_table",
    "load_tables",
    "normalize_dataset",
    "published_for",
]

#: The data file, next to this module (inside the installed package too).
PUBLISHED_TOML = Path(__file__).resolve().parent / "published.toml"

#: Dataset keys used in the TOML, in the column order of the papers' tables.
DATASETS: tuple[str, ...] = BENCHMARKS

_TABLE_KEYS = {"id", "paper", "source", "seed", "caption", "row"}
_ROW_KEYS = {
    "method",
    "printed",
    "model",
    "scale",
    "printed_scale",
    "self_ensemble",
    "training_data",
    "params",
    "flops",
    "results",
    "flags",
}


@dataclass(frozen=True)
class PublishedRow:
    """One method row of a published table at one scale.

    Attributes:
        method: The method's name as printed, without its citation or "(ours)" (e.g. ``RGT+``).
        model: Our registry name where we implement the method (``imdn``), else ``None``.
        scale: The upscaling factor of the row.
        results: Dataset key -> ``(PSNR, SSIM)``; SSIM is ``None`` where the table prints none.
            Datasets the row has no value for are absent.
        params: Parameter count as printed (``"694K"``, ``"13.37M"``), if the table gives it.
        self_ensemble: True for rows printed with "+" (self-ensemble at test time).
        flags: Why a printed value is suspicious (kept as published); empty when nothing is.
        printed: The full row label as printed (``"IMDN [28]"``); defaults to ``method``.
        training_data: Training set as printed, where the table has that column.
        flops: The table's FLOPs / Mult-Adds value as printed, if it gives one.
        printed_scale: The scale as printed where that is a typo (``scale`` holds the real one).
    """

    method: str
    model: str | None
    scale: int
    results: dict[str, tuple[float, float | None]]
    params: str | None = None
    self_ensemble: bool = False
    flags: tuple[str, ...] = ()
    printed: str = ""
    training_data: str | None = None
    flops: str | None = None
    printed_scale: int | None = None

    @property
    def label(self) -> str:
        """The row label as printed in the paper."""
        return self.printed or self.method

    @property
    def flagged(self) -> bool:
        """True when some printed value of this row is suspicious (see ``flags``)."""
        return bool(self.flags)


@dataclass(frozen=True)
class PublishedTable:
    """One results table of one paper.

    Attributes:
        id: Stable identifier users type (``srcli eval --table rgt-table2``).
        paper: Short paper name and venue, e.g. ``"RGT (ICLR 2024)"``.
        source: Where the numbers were copied from (seed file and table number, or a citation).
        caption: What the table reports, in a sentence or two.
        rows: The table's rows, in printed order.
        seed: Path of the seed text, relative to ``../shared`` (``None`` for literature tables).
    """

    id: str
    paper: str
    source: str
    caption: str
    rows: tuple[PublishedRow, ...]
    seed: str | None = None


def normalize_dataset(name: str) -> str:
    """The TOML key for a dataset name: ``"Set5"`` -> ``set5``, ``"BSD100"`` -> ``b100``.

    Raises:
        UsageError: The name is not one of the five benchmark datasets.
    """
    key = resolve_dataset_name(name)
    if key not in DATASETS:  # a training set such as t91: no paper reports on it
        raise UnknownDatasetError(f"unknown dataset '{name}' (known: {', '.join(DATASETS)})")
    return key


def _parse_results(where: str, raw: Any) -> dict[str, tuple[float, float | None]]:
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{where}: 'results' must be a non-empty table")
    results: dict[str, tuple[float, float | None]] = {}
    for dataset, values in raw.items():
        if dataset not in DATASETS:
            raise ValueError(f"{where}: unknown dataset key '{dataset}'")
        ok = isinstance(values, list) and len(values) in (1, 2)
        if not ok or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"{where}: {dataset} must be [PSNR, SSIM] or [PSNR], got {values!r}")
        psnr = float(values[0])
        ssim = float(values[1]) if len(values) == 2 else None
        results[dataset] = (psnr, ssim)
    return results


def _opt_str(where: str, raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where}: '{key}' must be a string")
    return value


def _parse_row(table_id: str, index: int, raw: dict[str, Any]) -> PublishedRow:
    where = f"published table '{table_id}', row {index + 1}"
    unknown = set(raw) - _ROW_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    method, scale = raw.get("method"), raw.get("scale")
    if not isinstance(method, str) or not method:
        raise ValueError(f"{where}: 'method' is required")
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"{where}: 'scale' must be a positive integer")
    flags = raw.get("flags", [])
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        raise ValueError(f"{where}: 'flags' must be a list of strings")
    printed_scale = raw.get("printed_scale")
    if printed_scale is not None and not isinstance(printed_scale, int):
        raise ValueError(f"{where}: 'printed_scale' must be an integer")
    return PublishedRow(
        method=method,
        model=_opt_str(where, raw, "model"),
        scale=scale,
        results=_parse_results(where, raw.get("results")),
        params=_opt_str(where, raw, "params"),
        self_ensemble=bool(raw.get("self_ensemble", False)),
        flags=tuple(flags),
        printed=_opt_str(where, raw, "printed") or method,
        training_data=_opt_str(where, raw, "training_data"),
        flops=_opt_str(where, raw, "flops"),
        printed_scale=printed_scale,
    )


def _parse_table(index: int, raw: dict[str, Any]) -> PublishedTable:
    table_id = raw.get("id")
    if not isinstance(table_id, str) or not table_id:
        raise ValueError(f"published table #{index + 1}: 'id' is required")
    unknown = set(raw) - _TABLE_KEYS
    if unknown:
        raise ValueError(f"published table '{table_id}': unknown keys {sorted(unknown)}")
    where = f"published table '{table_id}'"
    for key in ("paper", "source", "caption"):
        if not isinstance(raw.get(key), str):
            raise ValueError(f"{where}: '{key}' is required")
    rows = raw.get("row", [])
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{where}: has no rows")
    return PublishedTable(
        id=table_id,
        paper=raw["paper"],
        source=raw["source"],
        caption=raw["caption"],
        rows=tuple(_parse_row(table_id, i, row) for i, row in enumerate(rows)),
        seed=_opt_str(where, raw, "seed"),
    )


@functools.lru_cache(maxsize=1)
def _load(path: Path) -> tuple[PublishedTable, ...]:
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    tables = tuple(_parse_table(i, raw) for i, raw in enumerate(data.get("table", [])))
    seen: set[str] = set()
    for table in tables:
        if table.id in seen:
            raise ValueError(f"published table id '{table.id}' is used twice in {path.name}")
        seen.add(table.id)
    return tables


def load_tables(path: Path | None = None) -> dict[str, PublishedTable]:
    """Every published table, by id, in file order.

    Args:
        path: A TOML file in the same layout; defaults to the ``published.toml`` shipped with srcli.

    Raises:
        ValueError: The file is malformed (unknown keys, bad values, duplicate ids).
    """
    return {table.id: table for table in _load((path or PUBLISHED_TOML).resolve())}


def get_table(table_id: str) -> PublishedTable:
    """The table with this id (case-insensitive).

    Raises:
        UsageError: No table has this id; the message suggests the closest one.
    """
    tables = load_tables()
    key = table_id.strip().lower()
    if key in tables:
        return tables[key]
    close = difflib.get_close_matches(key, list(tables), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise UsageError(f"unknown published table '{table_id}'{hint} (known: {', '.join(tables)})")


def published_for(
    model: str, dataset: str, scale: int, self_ensemble: bool = False
) -> list[tuple[PublishedTable, PublishedRow]]:
    """Every published value for one of our models on ``dataset`` at ``scale``, across all tables.

    Args:
        model: A registry name or alias (``imdn``, ``msra``); matched against each row's ``model``.
        dataset: A dataset name in any usual spelling (``Set5``, ``BSD100``, ``b100``).
        scale: The upscaling factor.
        self_ensemble: Select the "+" (self-ensemble) rows instead of the plain ones.

    Returns:
        ``(table, row)`` pairs in file order; ``row.results[normalize_dataset(dataset)]`` holds
        the value. Empty when no table prints one.

    Raises:
        UnknownModelError: ``model`` is not a registered name or alias.
        UsageError: ``dataset`` is not one of the five benchmark datasets.
    """
    from srcli.registry import get_model  # the registry imports no torch either

    name = get_model(model).name
    key = normalize_dataset(dataset)
    return [
        (table, row)
        for table in load_tables().values()
        for row in table.rows
        if row.model == name and row.scale == scale and row.self_ensemble == self_ensemble and key in row.results
    ]
