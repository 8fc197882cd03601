"""Object-store inputs and outputs (``s3://``, ``gs://``, any fsspec URI) for the image job, by staging.

The planner and the executors (``image_plan``, ``outputs``, ``images``, ``device_pool``, ``ray_executor``)
work on local paths and stay as they are. When an input argument or ``-o`` is a URI whose scheme is not
``file``, ``stage_remote`` wraps the job:

1. **Inputs**: each remote argument is listed (a file; a prefix walked like a folder, recursively with
   ``-r``; a glob through ``fs.glob``) and downloaded into a staging folder under the user cache,
   mirroring its relative layout, so that names, ``{parent}`` and ``-r`` trees come out as for a local
   folder. Local arguments are used where they are.
2. **Existing outputs**: a dry plan on the staged inputs gives every final output name (format changes
   included). The output location is listed once; each existing object the plan maps to is mirrored into
   the staged output folder, so that ``outputs.decide_existing`` decides on it exactly as on a local disk:
   with ``--skip-existing`` or ``--dry-run`` as an empty file (those decisions only ask whether the output
   exists and whether the journal owns it; a skipped output is never uploaded), otherwise downloaded.
   The remote journal's entries are translated into the local journal, but only where the remote object
   still has the size and version (ETag, generation or modification time) recorded when srcli wrote it, so
   "this job's own earlier output" means the same as locally; any other existing object is refused without
   ``--overwrite``. Existing objects the plan does not map to are neither downloaded nor touched.
3. **Run**: the caller plans and runs the job on the staged folders with any executor.
4. **Upload** (``finish``): every output marked done is written to a temporary key
   ``.<name>.<8 hex>.partial`` beside its final key and moved there with ``fs.mv``; the merged journal is
   uploaded the same way, last. The report's paths are turned back into URIs and the staging folder is
   removed (also at interpreter exit, whatever happens in between).

Guarantees: an object PUT is atomic on S3 and GCS (a reader sees the old object or the whole new one), and
``mv`` there is a server-side copy then a delete of the temporary key, so a final key only ever holds a
complete output. A crash between the copy and the delete can leave a ``.partial`` key (hidden, skipped as
input). There is no atomicity across objects: an interrupted upload leaves some outputs written, and the
journal, uploaded last, may then not list them (they are refused on the next run unless ``--skip-existing``
or ``--overwrite``: the safe side). Two jobs writing one output prefix at once may lose each other's journal
entries, with the same safe consequence. On a local file system ``mv`` is a rename, atomic.

Real ``s3://`` and ``gs://`` need ``s3fs`` and ``gcsfs`` (``pip install "srcli[remote]"``); fsspec itself
comes with torch.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srcli.errors import UsageError

if TYPE_CHECKING:
    from srcli.pipeline.images import JobReport
    from srcli.pipeline.job import ImageOptions

#: What ``Path`` makes of ``scheme://rest``: the double slash collapsed (``s3:/bucket/key``).
_COLLAPSED = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):(/.*)$")
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
_GLOB_MAGIC = re.compile(r"[*?\[]")
#: Object fields that change whenever an object is rewritten, by preference.
_VERSION_FIELDS = ("ETag", "etag", "generation", "md5Hash", "LastModified", "updated", "mtime", "created")
_INSTALL_HINT = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}

Finish = Callable[["JobReport"], "JobReport"]


def uri_protocol(argument: str) -> str | None:
    """The scheme of ``argument`` when it is a URI (``s3``, ``gs``, ``memory``, ``file``...), else ``None``.

    A one-letter scheme is a Windows drive (``C:/photos``), not a URI.
    """
    match = _URI.match(argument)
    if match is None or len(match.group(1)) == 1:
        return None
    return urllib.parse.urlsplit(argument).scheme.lower()


def output_uri(output: Path | str) -> str:
    """``-o`` as given: typer hands it over as a ``Path``, which collapses ``s3://b/k`` into ``s3:/b/k``.

    The double slash is put back when the scheme is one fsspec knows; anything else is a local path.
    """
    text = str(output)
    if uri_protocol(text):
        return text
    match = _COLLAPSED.match(text)
    if match is None or len(match.group(1)) == 1:
        return text
    from fsspec.registry import known_implementations, registry

    scheme = match.group(1).lower()
    if scheme not in known_implementations and scheme not in registry:
        return text
    return f"{scheme}://{match.group(2)}" if scheme == "file" else f"{scheme}:/{match.group(2)}"


def file_uri_path(uri: str) -> str:
    """The local path of a ``file://`` URI (``file:///data/x.png`` -> ``/data/x.png``)."""
    return urllib.request.url2pathname(urllib.parse.urlsplit(uri).path)


def _filesystem(uri: str) -> tuple[Any, str]:
    """``(fsspec file system, path in it)`` for ``uri``; a missing driver is one line saying what to install."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(uri)
    except ImportError as exc:
        scheme = uri_protocol(uri) or ""
        package = _INSTALL_HINT.get(scheme)
        hint = f'pip install {package} (or pip install "srcli[remote]")' if package else str(exc)
        raise UsageError(f"{uri}: {scheme}:// needs a file system driver: {hint}") from None
    except ValueError as exc:
        raise UsageError(f"{uri}: {exc}") from None


def _join(parent: str, relative: str) -> str:
    """``parent/relative`` for fsspec paths (``relative`` uses ``/``)."""
    return parent.rstrip("/") + "/" + relative if parent else relative


def _split(path: str) -> tuple[str, str]:
    """``(parent, name)`` of an fsspec path."""
    parent, _, name = path.rstrip("/").rpartition("/")
    return (parent or ("/" if path.startswith("/") else "")), name


def _version(info: dict[str, Any]) -> str | None:
    """A value that changes whenever the object is rewritten (ETag, generation, modification time...)."""
    for key in _VERSION_FIELDS:
        value = info.get(key)
        if value is None:
            continue
        # One file system may give a time as a datetime in ``info`` and as seconds in a listing.
        if hasattr(value, "timestamp"):
            value = value.timestamp()
        return f"{value:.6f}" if isinstance(value, float) else str(value)
    return None


def _is_local(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def atomic_upload(fs: Any, remote: str, *, local: Path | None = None, data: bytes | None = None) -> None:
    """Write ``local`` (a file) or ``data`` to ``remote``: to ``.<name>.<8 hex>.partial`` first, then ``fs.mv``.

    On S3 / GCS the temporary object is PUT whole (atomic per object) and ``mv`` is a server-side copy and a
    delete, so ``remote`` never holds a partial output; locally ``mv`` is a rename. The temporary key is
    removed on any failure.
    """
    parent, name = _split(remote)
    temp = _join(parent, f".{name}.{secrets.token_hex(4)}.partial")
    if _is_local(fs):
        fs.makedirs(parent, exist_ok=True)
    try:
        if local is not None:
            fs.put_file(str(local), temp)
        else:
            fs.pipe_file(temp, data or b"")
        fs.mv(temp, remote)
    except BaseException:
        with contextlib.suppress(Exception):
            if fs.exists(temp):
                fs.rm(temp)
        raise


def _read_journal(text: str) -> dict[str, dict[str, Any]]:
    """Journal lines (``outputs.OutputJournal``'s format) by output key; a damaged line is skipped."""
    entries: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            entries[str(entry["output"])] = entry
        except (ValueError, KeyError, TypeError):
            continue
    return entries


@dataclass
class _Staging:
    """One staged job: the staging folder, where each staged input came from, and the output location."""

    root: Path
    #: Resolved local path of each staged (or local) input -> the identity the remote journal records.
    identities: dict[str, str] = field(default_factory=dict)
    out_fs: Any = None
    #: The output's remote path and its local stand-in.
    out_path: str = ""
    local_out: Path = Path()
    #: The journal folder, remote and local (``-o``, or its parent for one output file).
    remote_root: str = ""
    local_root: Path = Path()
    remote_journal: dict[str, dict[str, Any]] = field(default_factory=dict)
    cleanup: Callable[[], None] = lambda: None

    def identity(self, path: Path | str) -> str:
        """The journal's name for an input: its URI when it was downloaded, else its resolved local path."""
        resolved = str(Path(path).resolve())
        return self.identities.get(resolved, resolved)

    def remote_of(self, local: Path | str) -> str:
        """The remote path of a file under the staged output folder."""
        relative = os.path.relpath(Path(local).resolve(), self.local_root.resolve())
        return _join(self.remote_root, Path(relative).as_posix())

    def download(self, fs: Any, pairs: list[tuple[str, Path]]) -> None:
        """Fetch ``(remote path, local path)`` pairs (one batched ``fs.get``: concurrent on S3 and GCS)."""
        if not pairs:
            return
        for _, local in pairs:
            local.parent.mkdir(parents=True, exist_ok=True)
        try:
            fs.get([r for r, _ in pairs], [str(p) for _, p in pairs])
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot download the inputs: {exc}") from None


def _stage_argument(stage: _Staging, index: int, argument: str, recursive: bool, exclude: str | None) -> str:
    """Download one remote argument into ``stage.root/inputs/<index>/``; the local argument standing in for it."""
    from srcli.pipeline.inputs import INPUT_SUFFIXES

    fs, path = _filesystem(argument)
    base = stage.root / "inputs" / str(index)
    pairs: list[tuple[str, Path]] = []

    def wanted(relative: str) -> bool:
        parts = relative.split("/")
        return not any(p.startswith(".") for p in parts) and Path(parts[-1]).suffix.lower() in INPUT_SUFFIXES

    def outside_output(remote: str) -> bool:
        return exclude is None or not (remote == exclude or remote.startswith(exclude.rstrip("/") + "/"))

    if _GLOB_MAGIC.search(path):
        parts = path.split("/")
        first = next(i for i, p in enumerate(parts) if _GLOB_MAGIC.search(p))
        prefix = "/".join(parts[:first])
        pattern_tail = "/".join(parts[first:])
        _, prefix_name = _split(prefix) if prefix.strip("/") else ("", "root")
        local_prefix = base / (prefix_name or "root")
        matches = fs.glob(path, detail=True)
        for remote, info in sorted(matches.items()):
            if info.get("type") == "file" and outside_output(remote):
                pairs.append((remote, local_prefix / os.path.relpath(remote, prefix or "/")))
        if not pairs:
            raise UsageError(f"{argument}: matches no file")
        local_prefix.mkdir(parents=True, exist_ok=True)
        local_argument = str(local_prefix / pattern_tail)
    else:
        try:
            info = fs.info(path)
        except FileNotFoundError:
            raise UsageError(f"{argument}: not found") from None
        except OSError as exc:
            raise UsageError(f"{argument}: cannot read it ({exc})") from None
        name = _split(path)[1] or "root"
        if info.get("type") == "file":
            pairs.append((path, base / name))
            local_argument = str(base / name)
        else:
            listing = fs.find(path, detail=True) if recursive else {i["name"]: i for i in fs.ls(path, detail=True)}
            for remote, entry in sorted(listing.items()):
                relative = os.path.relpath(remote, path)
                if entry.get("type") == "file" and wanted(Path(relative).as_posix()) and outside_output(remote):
                    pairs.append((remote, base / name / relative))
            (base / name).mkdir(parents=True, exist_ok=True)
            local_argument = str(base / name)
    stage.download(fs, pairs)
    for remote, local in pairs:
        stage.identities[str(local.resolve())] = fs.unstrip_protocol(remote)
    return local_argument


def unchanged(report: JobReport) -> JobReport:
    """``finish`` for a job with nothing remote: the report as it is."""
    return report


def stage_remote(
    inputs: list[str], options: ImageOptions, *, dry_run: bool = False
) -> tuple[list[str], ImageOptions, Finish]:
    """Stage a job whose inputs or ``-o`` are object-store URIs; see the module docstring.

    Returns the local arguments, the options with a local output folder, and ``finish(report)``, which
    uploads the outputs done, then the journal, puts the URIs back into the report and removes the
    staging folder. Without any remote URI this returns its arguments (``file://`` URIs as local paths)
    and a ``finish`` that does nothing, without importing fsspec.
    """
    out = output_uri(options.output)
    out_scheme = uri_protocol(out)
    schemes = [uri_protocol(a) for a in inputs]
    if all(s in (None, "file") for s in [*schemes, out_scheme]):
        local_inputs = [file_uri_path(a) if s == "file" else a for a, s in zip(inputs, schemes, strict=True)]
        if out_scheme == "file":
            options = replace(options, output=Path(file_uri_path(out)))
        return local_inputs, options, unchanged

    from srcli.hub.cache import cache_root
    from srcli.pipeline.image_plan import plan_images

    parent = cache_root(options.run.cache_dir) / "staging"
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="job-", dir=parent)).resolve()

    def cleanup() -> None:
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(cleanup)
    stage = _Staging(root=root, cleanup=cleanup)
    try:
        return _stage(stage, inputs, schemes, out, options, dry_run, plan_images)
    except BaseException:
        cleanup()
        atexit.unregister(cleanup)
        raise


def _stage(
    stage: _Staging,
    inputs: list[str],
    schemes: list[str | None],
    out: str,
    options: ImageOptions,
    dry_run: bool,
    plan_images: Callable[..., Any],
) -> tuple[list[str], ImageOptions, Finish]:
    """The body of ``stage_remote`` once its staging folder exists."""
    out_fs, out_path = _filesystem(out if uri_protocol(out) else str(Path(out).expanduser().resolve()))
    stage.out_fs, stage.out_path = out_fs, out_path
    out_parent, out_name = _split(out_path)
    stage.local_out = stage.root / "out" / (out_name or "root")
    stage.local_out.parent.mkdir(parents=True)

    local_inputs: list[str] = []
    for index, (argument, scheme) in enumerate(zip(inputs, schemes, strict=True)):
        if scheme is None or scheme == "file":
            local = file_uri_path(argument) if scheme == "file" else argument
            local_inputs.append(local)
            continue
        fs, _ = _filesystem(argument)
        same_store = type(fs) is type(out_fs)
        exclude = out_path if same_store else None
        local_inputs.append(_stage_argument(stage, index, argument, options.recursive, exclude))

    # Everything under -o as it is now (one listing), and -o itself when it is one object.
    try:
        existing: dict[str, dict[str, Any]] = out_fs.find(out_path, detail=True, withdirs=True)
    except (FileNotFoundError, NotADirectoryError):
        existing = {}
    except OSError as exc:
        raise UsageError(f"{out}: cannot list it ({exc})") from None
    existing = {k.rstrip("/"): v for k, v in existing.items()}
    root_info = existing.get(out_path.rstrip("/"))
    if root_info is not None and root_info.get("type") == "file":
        stage.local_out.touch()  # -o names an existing object: plan_images decides what that means
    elif existing:
        stage.local_out.mkdir()

    local_options = replace(options, output=stage.local_out)
    dry = plan_images(local_inputs, local_options, create_folders=False)
    stage.local_root = Path(dry.journal_root).resolve()
    single = stage.local_root != stage.local_out.resolve()
    stage.remote_root = out_parent if single else out_path
    with contextlib.suppress(FileNotFoundError):
        from srcli.pipeline.outputs import JOURNAL_NAME

        text = out_fs.cat_file(_join(stage.remote_root, JOURNAL_NAME)).decode("utf-8", errors="replace")
        stage.remote_journal = _read_journal(text)

    downloads: list[tuple[str, Path]] = []
    owned: list[tuple[Path, Any, dict[str, Any]]] = []
    for item in dry.items:
        if item.output is None:
            continue
        remote = stage.remote_of(item.output).rstrip("/")
        info = existing.get(remote)
        if info is None:
            continue
        local = Path(item.output)
        if info.get("type") != "file":
            local.mkdir(parents=True, exist_ok=True)
            continue
        if local.resolve() == stage.local_out.resolve() and local.exists():
            local.unlink()
        if options.skip_existing or dry_run:
            # Only existence (and, for ownership, the translated journal below) decides: no bytes needed.
            local.parent.mkdir(parents=True, exist_ok=True)
            local.touch()
        else:
            downloads.append((remote, local))
        entry = stage.remote_journal.get(Path(os.path.relpath(local.resolve(), stage.local_root)).as_posix())
        if (
            entry is not None
            and entry.get("input") == stage.identity(item.input)
            and entry.get("size") == info.get("size")
            and entry.get("version") == _version(info)
        ):
            owned.append((local, item.input, entry))
    stage.download(out_fs, downloads)
    _write_local_journal(stage, owned)
    return local_inputs, local_options, lambda report: _finish(stage, report)


def _write_local_journal(stage: _Staging, owned: list[tuple[Path, Any, dict[str, Any]]]) -> None:
    """Record, in the staged output's journal, the downloaded outputs the remote journal says this job wrote,
    with their local size and modification time, so that ``OutputJournal.owns`` recognises them."""
    from srcli.pipeline.outputs import JOURNAL_NAME

    lines = []
    for local, source, entry in owned:
        st = local.stat()
        line = {
            "output": os.path.relpath(local.resolve(), stage.local_root),
            "input": str(Path(source).resolve()),
            "settings": entry.get("settings"),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
        }
        lines.append(json.dumps(line, sort_keys=True) + "\n")
    if lines:
        stage.local_root.mkdir(parents=True, exist_ok=True)
        (stage.local_root / JOURNAL_NAME).write_text("".join(lines), encoding="utf-8")


def _finish(stage: _Staging, report: JobReport) -> JobReport:
    """Upload the outputs done (temporary key, then ``mv``), then the merged journal; URIs into the report."""
    from srcli.pipeline.outputs import JOURNAL_NAME

    fs = stage.out_fs
    try:
        try:
            local_journal = _read_journal((stage.local_root / JOURNAL_NAME).read_text(encoding="utf-8"))
        except FileNotFoundError:
            local_journal = {}
        journal = dict(stage.remote_journal)
        changed = False
        for f in report.files:
            staged_output = f.output
            if f.output is not None and _is_under(f.output, stage.root):
                f.output = fs.unstrip_protocol(stage.remote_of(f.output))
            source = stage.identity(f.input)
            if _is_under(f.input, stage.root):
                f.input = source
            if f.status != "done" or staged_output is None:
                continue
            remote = stage.remote_of(staged_output)
            key = Path(os.path.relpath(staged_output, stage.local_root)).as_posix()
            try:
                atomic_upload(fs, remote, local=Path(staged_output))
                # A listing, as at staging: some drivers describe one object differently in info and in ls.
                info = fs.find(remote, detail=True).get(remote) or fs.info(remote)
            except Exception as exc:  # noqa: BLE001  (any driver error: this file failed, the batch goes on)
                f.status, f.message = "failed", f"{f.output}: upload failed ({exc})"
                continue
            local_entry = local_journal.get(key)
            if local_entry is not None:
                journal[key] = {
                    "output": key,
                    "input": source,
                    "settings": local_entry.get("settings"),
                    "size": info.get("size"),
                    "version": _version(info),
                }
                changed = True
        if changed:
            text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in journal.values())
            atomic_upload(fs, _join(stage.remote_root, JOURNAL_NAME), data=text.encode("utf-8"))
    finally:
        stage.cleanup()
        atexit.unregister(stage.cleanup)
    return report


def _is_under(path: str | Path, folder: Path) -> bool:
    """True when ``path`` lies inside ``folder``."""
    resolved = Path(path).resolve()
    return resolved == folder or folder in resolved.parents
