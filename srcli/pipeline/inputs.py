"""Turning command-line arguments into (input file, output file) pairs.

Arguments may mix files, folders and glob patterns. A folder contributes its images (its whole
tree with ``recursive``, mirrored under the output folder); a file named explicitly is tried
whatever its extension, since its content decides. Output names come from a template.
"""

from __future__ import annotations

import glob
import os
import string
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from srcli.atomic import is_temp_file
from srcli.errors import UsageError
from srcli.io.images import IMAGE_SUFFIXES
from srcli.pipeline.job import DEFAULT_NAME

#: Extra suffixes read as (possibly animated) images.
ANIMATED_SUFFIXES = frozenset({".gif", ".apng"})
INPUT_SUFFIXES = IMAGE_SUFFIXES | ANIMATED_SUFFIXES
__all__ = ["DEFAULT_NAME", "INPUT_SUFFIXES", "InputFile", "check_template", "collect_inputs", "output_name"]
TEMPLATE_FIELDS = frozenset({"stem", "name", "ext", "model", "scale", "parent"})


@dataclass(frozen=True)
class InputFile:
    """One file to process and where it sits relative to the argument that named it."""

    path: Path
    #: Folder of ``path`` relative to the argument folder ('' for files named directly).
    relative_dir: str


def _is_inside(path: Path, folders: frozenset[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def _folder_images(folder: Path, recursive: bool, exclude: frozenset[Path]) -> list[InputFile]:
    found: list[InputFile] = []
    if recursive:
        for root, dirs, files in os.walk(folder):
            # Hidden folders (work folders, caches) and the job's own output tree are never inputs.
            dirs[:] = sorted(
                d for d in dirs if not d.startswith(".") and not _is_inside((Path(root) / d).resolve(), exclude)
            )
            rel = os.path.relpath(root, folder)
            for name in sorted(files):
                path = Path(root) / name
                if path.suffix.lower() in INPUT_SUFFIXES and not name.startswith("."):
                    found.append(InputFile(path, "" if rel == "." else rel))
    else:
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in INPUT_SUFFIXES and not path.name.startswith("."):
                found.append(InputFile(path, ""))
    return found


def collect_inputs(arguments: list[str], *, recursive: bool = False, exclude: Iterable[Path] = ()) -> list[InputFile]:
    """Expand files, folders and glob patterns into a sorted, de-duplicated list of inputs.

    Folders under ``exclude`` (the job's output folder, when it lies inside an input tree) are not walked,
    so outputs are never taken as inputs. Raises ``UsageError`` for an argument that names nothing (a
    missing path or a pattern that matches nothing), so a typo does not pass for an empty batch.
    """
    excluded = frozenset(p.resolve() for p in exclude)
    seen: set[Path] = set()
    result: list[InputFile] = []

    def add(item: InputFile, *, found: bool = True) -> None:
        # A file named on the command line is taken as asked; files found by a walk or a pattern are
        # not taken from the excluded output tree.
        key = item.path.resolve()
        if key not in seen and not is_temp_file(item.path) and not (found and _is_inside(key, excluded)):
            seen.add(key)
            result.append(item)

    for argument in arguments:
        path = Path(argument).expanduser()
        if path.is_dir():
            for item in _folder_images(path, recursive, excluded):
                add(item)
        elif path.is_file():
            add(InputFile(path, ""), found=False)
        elif glob.has_magic(argument):
            matches = sorted(glob.glob(os.path.expanduser(argument), recursive=True))
            files = [Path(m) for m in matches if Path(m).is_file() and Path(m).suffix.lower() in INPUT_SUFFIXES]
            if not files:
                raise UsageError(f"{argument}: the pattern matches no image file")
            for file in files:
                add(InputFile(file, ""))
        else:
            raise UsageError(f"{argument}: no such file or folder")
    return result


def check_template(template: str) -> None:
    """Raise ``UsageError`` unless ``template`` uses only known ``{fields}``."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise UsageError(f"--name '{template}': {exc}") from None
    unknown = fields - TEMPLATE_FIELDS
    if unknown:
        known = ", ".join("{" + f + "}" for f in sorted(TEMPLATE_FIELDS))
        raise UsageError(f"--name '{template}': unknown field(s) {sorted(unknown)}; use {known}")
    if "" in fields:
        raise UsageError(f"--name '{template}': empty {{}} field; name it, e.g. {{stem}}")
    if "/" in template or "\\" in template:
        raise UsageError(f"--name '{template}': the name may not contain a folder separator")


def output_name(template: str, source: Path, *, model: str, scale: float, ext: str) -> str:
    """The output file name for ``source``; the template fields are ``TEMPLATE_FIELDS``."""
    scale_text = f"{scale:g}"
    return template.format(
        stem=source.stem, name=source.name, ext=ext, model=model, scale=scale_text, parent=source.parent.name
    )
