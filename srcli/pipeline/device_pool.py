"""``--devices``: one image job on several devices at once, one worker process per device.

The plan (``plan_images``) is the unit of work, as for ``run_job``: nothing is re-planned, every item is
written exactly where the plan says, by the same ``read_item`` / ``upscale_frames`` / ``write_item``
(the same atomic writer). What changes is who runs the model:

- One worker process per listed device (``spawn``, so CUDA is initialised in each worker only). Each
  resolves the plan's ``RunOptions`` with its own device and a share of the CPU threads, loads the model
  once and keeps it. A worker reads ahead and writes behind in threads, as ``run_job`` does, while its
  main thread runs the model; it sends back a small result per item (the ``FileReport`` fields).
- The main process holds the one queue of items, largest first, and hands each worker a few at a time. It
  alone records the output journal, drives ``JobEvents`` (one progress bar) and builds the report, with
  per-device throughput (``PoolReport.workers``) and the retries.

Faults. A worker that dies (killed, out of memory) costs only the items it held. Those whose model had
started (the worker says so, synchronously, before it starts) count as retries; the others had only
been read ahead. All go back to the front of the queue, for another worker or for the dead one's
restart; the temporary files it may have left for them are removed. A file under its final name is
always complete (atomic writes), and the journal records only outputs whose result message arrived, so
an output written just before the death is simply written again, whole, under the same name. An item
whose worker dies ``MAX_ATTEMPTS`` times fails with a message saying so.

Ctrl-C or SIGTERM in the main process (``KeyboardInterrupt``) sends SIGTERM to the workers (which
ignore SIGINT, so a terminal's Ctrl-C reaches only the main process): each abandons its model pass,
lets the writes in flight finish and report, and exits. The report says interrupted.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from srcli.errors import DeviceError, UsageError
from srcli.pipeline.image_plan import ImagePlan, PlannedImage
from srcli.pipeline.images import (
    FileReport,
    JobEvents,
    JobReport,
    announce_files,
    read_item,
    remove_stale_temp_files,
    report_for_plan,
    upscale_frames,
    write_item,
)
from srcli.pipeline.messages import error_text, one_line
from srcli.pipeline.worker_pool import (
    MAX_ATTEMPTS,
    PoolReportFields,
    ProcessPool,
    Retries,
    StatsRecord,
    Worker,
    WorkerChannel,
    close_report,
    describe_workers,
    exit_cause,
    may_restart,
    serve,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from srcli.engine.options import RunOptions
    from srcli.io.imagefile import DecodedImage
    from srcli.pipeline.job import ImageOptions

log = logging.getLogger("srcli.upscale")

__all__ = [
    "MAX_ATTEMPTS",
    "ItemHook",
    "ItemRunner",
    "PoolReport",
    "WorkerStats",
    "parse_devices",
    "run_job_on_devices",
]

#: ``--devices`` entries: ``cpu``, ``mps``, ``cuda`` or ``cuda:N``.
_DEVICE_PATTERN = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
#: The ``FileReport`` fields a worker fills in and sends back.
RESULT_FIELDS: tuple[str, ...] = (
    "status",
    "message",
    "notes",
    "out_width",
    "out_height",
    "seconds",
    "model_seconds",
    "tile",
    "tiles",
    "refined_tiles",
    "oom_retries",
)

#: Called in the worker just before the model starts on an item (tests use it to kill a worker there).
ItemHook = Callable[[PlannedImage], None]


# ---------------------------------------------------------------------------------------------
# Devices


def parse_devices(text: str) -> list[str]:
    """``--devices`` text as a list of device names, one worker each.

    ``all``: every CUDA device (``cuda:0`` ...), or one CPU worker where there is none. Otherwise a comma
    separated list of ``cpu``, ``mps``, ``cuda`` (``cuda:0``) and ``cuda:N``; an entry may repeat (``cpu,cpu``
    runs two CPU workers that share the cores). Raises ``UsageError`` with one line naming the problem;
    torch is imported only to count or check CUDA devices.
    """
    value = text.strip().lower()
    if value == "all":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(count)] or ["cpu"]
    entries = [p.strip() for p in value.split(",")]
    if not value or any(not p for p in entries):
        raise UsageError(
            f"--devices '{text}': give 'all' or a comma-separated list of devices, e.g. cuda:0,cuda:1 or cpu,cpu"
        )
    devices: list[str] = []
    for entry in entries:
        if not _DEVICE_PATTERN.match(entry):
            raise UsageError(f"--devices: unknown device '{entry}' (use cpu, mps, cuda:N, or 'all' for every GPU)")
        devices.append("cuda:0" if entry == "cuda" else entry)
    cuda = [int(d.split(":")[1]) for d in devices if d.startswith("cuda:")]
    if cuda:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"--devices {text}: CUDA is not available here (use --devices cpu)")
        missing = sorted({i for i in cuda if i >= count})
        if missing:
            raise DeviceError(
                f"--devices {text}: cuda:{missing[0]} does not exist "
                f"({count} CUDA device(s): cuda:0 to cuda:{count - 1})"
            )
    return devices


# ---------------------------------------------------------------------------------------------
# The report


@dataclass
class WorkerStats(StatsRecord):
    """What one device's worker did (restarts included)."""

    slot: int
    device: str
    #: The resolved device, e.g. ``cpu (1 threads)`` or ``cuda:1 (NVIDIA H100 80GB HBM3)``.
    description: str = ""
    images: int = 0
    failed: int = 0
    #: From the worker's first item to its last result.
    seconds: float = 0.0
    model_seconds: float = 0.0
    output_megapixels: float = 0.0
    restarts: int = 0

    @property
    def images_per_second(self) -> float:
        """Images done per second of this worker's span (0 before any)."""
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The fields (floats rounded) and the throughput."""
        return {**super().to_dict(), "images_per_second": round(self.images_per_second, 4)}

    def count(self, rep: FileReport, worker: Any) -> None:
        """Add ``worker``'s finished item ``rep`` (done or failed); its span runs on from ``worker.first_item``."""
        if rep.status == "done":
            self.images += 1
            self.output_megapixels += (rep.out_width or 0) * (rep.out_height or 0) * (rep.frames or 1) / 1e6
        else:
            self.failed += 1
        self.model_seconds += rep.model_seconds
        if worker.first_item is not None:
            now = time.perf_counter()
            self.seconds += now - worker.first_item
            worker.first_item = now


@dataclass
class PoolReport(PoolReportFields[WorkerStats], JobReport):
    """``JobReport`` for a job run by several workers: who did what, and how many items ran again."""

    @classmethod
    def for_plan(cls, plan: ImagePlan, executor: str) -> PoolReport:
        """The report of ``plan`` as ``report_for_plan`` makes it, for ``executor``."""
        return cls.from_report(report_for_plan(plan), executor)


def gave_up_message(device: str, cause: str) -> str:
    """The failure of an item whose worker died ``MAX_ATTEMPTS`` times."""
    return (
        f"the worker died each of the {MAX_ATTEMPTS} times it ran this image (last: on {device}, {cause}); "
        "it may need more memory than the device has (try a smaller --tile)"
    )


def apply_result(rep: FileReport, result: dict[str, Any]) -> None:
    """Copy a worker's result fields into the main process's ``FileReport``."""
    for name in RESULT_FIELDS:
        if name == "notes":
            rep.notes.extend(n for n in result.get("notes", ()) if n not in rep.notes)
        elif name in result:
            setattr(rep, name, result[name])


def finish_file(rep: FileReport, item: PlannedImage, result: dict[str, Any], plan: ImagePlan, journal: Any) -> None:
    """Apply a worker's result to ``rep``, record a written output in the journal, log a failure."""
    apply_result(rep, result)
    if rep.status == "done":
        try:
            journal.record(item.output, item.input, plan.fingerprint)
        except OSError as exc:
            rep.status, rep.message = "failed", f"written, but cannot be recorded: {exc.strerror or exc}"
    if rep.status == "failed":
        prefix = "cannot write output: " if result.get("stage") == "write" else ""
        log.error("%s", one_line(rep.input, prefix + rep.message))


# ---------------------------------------------------------------------------------------------
# One device's model and the work on one item (in a worker process or a Ray actor)


class ItemRunner:
    """One device's model, loaded once, and the steps of one item: the worker side of every executor."""

    def __init__(self, options: ImageOptions, run: RunOptions) -> None:
        """Resolve ``run`` (device, threads, precision) and load and prepare its model."""
        from srcli.engine.host_memory import keep_freed_memory
        from srcli.engine.options import resolve_run
        from srcli.pipeline.model_setup import set_up_model

        self.options = options
        self.resolved = resolve_run(run)
        if self.resolved.device.type == "cpu":
            keep_freed_memory()
        assert run.scale is not None
        scratch = JobReport(model=run.model, scale=run.scale, outscale=run.outscale, device="", precision="")
        loaded, self.engine = set_up_model(self.resolved, scratch, needed=True)
        assert loaded is not None
        self.loaded = loaded
        self.description, self.precision, self.compiled = scratch.device, scratch.precision, scratch.compiled

    @staticmethod
    def new_report(item: PlannedImage) -> FileReport:
        """A blank ``FileReport`` for ``item`` (the worker's side of it)."""
        return FileReport(input=str(item.input), output=str(item.output), status="planned", notes=list(item.notes))

    def read(self, item: PlannedImage) -> DecodedImage:
        """Decode ``item``'s input."""
        return read_item(item, self.options.max_pixels)

    def upscale(self, decoded: DecodedImage, rep: FileReport) -> list[Any]:
        """Run the model over every frame; later items start from a tile that fitted."""
        from srcli.engine.upscale import with_tile

        rep.notes.extend(n for n in decoded.notes if n not in rep.notes)
        frames = upscale_frames(self.loaded, decoded, self.options.alpha, self.engine, self.resolved.device, rep)
        if rep.oom_retries:
            self.engine = with_tile(self.engine, rep.tile)
        return frames

    def write(self, item: PlannedImage, decoded: DecodedImage, frames: list[Any]) -> None:
        """Write ``item``'s output atomically, where and as the plan says."""
        write_item(item, decoded, frames, self.options)

    def run_item(self, item: PlannedImage, hook: ItemHook | None = None) -> dict[str, Any]:
        """Read, upscale and write ``item`` here and now; the result fields (``RESULT_FIELDS`` and ``stage``)."""
        rep = self.new_report(item)
        t0 = time.perf_counter()
        stage = "model"
        try:
            decoded = self.read(item)
            if hook is not None:
                hook(item)
            frames = self.upscale(decoded, rep)
            stage = "write"
            self.write(item, decoded, frames)
            rep.status = "done"
        except Exception as exc:
            rep.status, rep.message = "failed", error_text(exc)
        rep.seconds = time.perf_counter() - t0
        return result_of(rep, stage)


def result_of(rep: FileReport, stage: str) -> dict[str, Any]:
    """The small message a worker sends back for one item."""
    result = {name: getattr(rep, name) for name in RESULT_FIELDS}
    result["stage"] = stage
    return result


# ---------------------------------------------------------------------------------------------
# The worker process


def _worker_main(conn: Connection, options: ImageOptions, run: RunOptions, hook: ItemHook | None, depth: int) -> None:
    """A worker process: load the model, then read ahead, upscale and write behind the items it is sent.

    Messages to the main process (``serve``): ``("ready", description, precision, compiled)`` or
    ``("start_failed", error)``, then per item ``("started", index)`` (sent before the model starts) and
    ``("result", index, fields)``.
    """
    serve(conn, lambda: ItemRunner(options, run), lambda channel, runner: _run_items(channel, runner, hook, depth))


def _run_items(channel: WorkerChannel, runner: ItemRunner, hook: ItemHook | None, depth: int) -> None:
    """Read ahead, upscale and write behind each ``("item", index, item)`` received, until ``stop``."""
    readers = ThreadPoolExecutor(max_workers=max(1, depth - 1), thread_name_prefix="srcli-read")
    writers = ThreadPoolExecutor(max_workers=max(1, depth - 1), thread_name_prefix="srcli-write")
    ahead: deque[tuple[int, PlannedImage, Future[DecodedImage]]] = deque()
    writes: list[Future[None]] = []

    def written(index: int, rep: FileReport, t0: float, future: Future[None]) -> None:
        try:
            future.result()
            rep.status = "done"
        except Exception as exc:
            rep.status, rep.message = "failed", error_text(exc)
        rep.seconds = time.perf_counter() - t0
        channel.send(("result", index, result_of(rep, "write")))

    # SIGTERM (``Terminated``) abandons the model pass; the finally lets the writes in flight finish and report.
    try:
        stop = False
        while True:
            while not stop and (not ahead or channel.poll()):
                message = channel.receive()
                if message is None:
                    stop = True
                    break
                _, index, item = message
                ahead.append((index, item, readers.submit(runner.read, item)))
            if not ahead:
                break
            index, item, future = ahead.popleft()
            rep = runner.new_report(item)
            t0 = time.perf_counter()
            try:
                decoded = future.result()
                writes[:] = [w for w in writes if not w.done()]
                if hook is not None:
                    # The hook sees the worker with nothing else started (its tests count retries exactly).
                    wait_futures(writes)
                channel.send(("started", index))
                if hook is not None:
                    hook(item)
                frames = runner.upscale(decoded, rep)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                rep.status, rep.message = "failed", error_text(exc)
                rep.seconds = time.perf_counter() - t0
                channel.send(("result", index, result_of(rep, "model")))
                continue
            write = writers.submit(runner.write, item, decoded, frames)
            writes.append(write)
            write.add_done_callback(lambda f, i=index, r=rep, t=t0: written(i, r, t, f))
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        writers.shutdown(wait=True)


# ---------------------------------------------------------------------------------------------
# The main process


def run_job_on_devices(
    plan: ImagePlan,
    devices: Sequence[str],
    *,
    events: JobEvents | None = None,
    item_hook: ItemHook | None = None,
) -> PoolReport:
    """Run the image job ``plan`` on ``devices`` (``parse_devices``), one worker process each; the report.

    The same files come out as from ``run_job``: see the module docstring for the work split, the faults
    a job survives and Ctrl-C. ``events`` is driven from this process (no per-tile progress). ``item_hook``,
    a picklable callable, runs in a worker just before the model starts on each item (for tests).

    Raises the workers' error when none could load the model (a bad checkpoint, a missing device).
    """
    devices = list(devices)
    if not devices:
        raise UsageError("--devices: no device given")
    events = events or JobEvents()
    options = plan.options
    report, reports, todo = start_pool_job(plan, "devices")
    if not todo:
        return finish_without_work(plan, report, events)
    journal = plan.journal()
    queue: deque[int] = deque(sorted(todo, key=lambda i: -plan.items[i].pixels))
    retries = Retries(report, todo)
    #: Items a worker holds at once: one in the model, the others being read ahead or written.
    depth = max(2, options.io_workers + 1)
    pool = ProcessPool(options, devices, _worker_main, (item_hook, depth), "srcli-worker", WorkerStats)
    report.workers = pool.stats
    outstanding = set(todo)
    started = time.perf_counter()
    announced = False
    until: float | None = None
    ever_ready = False
    errors: list[BaseException] = []
    stopping = False

    def announce() -> None:
        nonlocal announced, started
        announced = True
        ready = [pool.stats[w.slot].description for w in pool.live() if w.ready]
        started = announce_job(plan, report, events, ready, precisions)

    precisions: list[str] = []

    def dispatch() -> None:
        if not announced or stopping:
            return
        for w in pool.live():
            while w.ready and queue and len(w.assigned) < depth:
                index = queue.popleft()
                if not pool.send(w, ("item", index, plan.items[index])):
                    queue.appendleft(index)
                    break
                w.assigned[index] = False
                if w.first_item is None:
                    w.first_item = time.perf_counter()

    def handle(w: Worker, message: tuple[Any, ...]) -> None:
        nonlocal ever_ready
        kind = message[0]
        stats = pool.stats[w.slot]
        if kind == "ready":
            w.ready, ever_ready = True, True
            stats.description = message[1]
            precisions.append(message[2])
            report.compiled = report.compiled or bool(message[3])
        elif kind == "start_failed":
            w.start_error = message[1]
            errors.append(message[1])
            log.warning("the worker on %s could not start: %s", w.device, error_text(message[1]))
        elif kind == "started":
            index = message[1]
            w.assigned[index] = True
            events.file_started(plan.items[index])
        elif kind == "result":
            _, index, result = message
            w.assigned.pop(index, None)
            outstanding.discard(index)
            rep = reports[index]
            finish_file(rep, plan.items[index], result, plan, journal)
            stats.count(rep, w)
            events.file_finished(rep)
            if rep.status == "failed" and options.fail_fast:
                queue.clear()
                for i in list(outstanding):
                    if not any(i in x.assigned for x in pool.live()):
                        outstanding.discard(i)

    def ended(w: Worker) -> None:
        """``w`` exited: put back what it held, clean up after it, start it again if work is left."""
        for message in pool.receive(w):
            handle(w, message)
        pool.forget(w)
        stats = pool.stats[w.slot]
        if w.start_error is not None or (stopping and not w.assigned):
            return
        cause = exit_cause(w.process.exitcode)
        held = sorted(w.assigned, key=lambda i: -plan.items[i].pixels)
        if not stopping and (held or not w.ready):
            log.warning("the worker on %s %s; %d image(s) it held go back in the queue", w.device, cause, len(held))
        remove_stale_temp_files(tuple(plan.items[i] for i in held))
        back: list[int] = []
        for index in held:
            if stopping:
                continue  # interrupted: left as not processed
            if w.assigned[index]:
                rep = reports[index]
                if not retries.died(index):
                    rep.status, rep.message = "failed", gave_up_message(w.device, cause)
                    outstanding.discard(index)
                    log.error("%s", one_line(rep.input, rep.message))
                    stats.failed += 1
                    events.file_finished(rep)
                    continue
                rep.notes.append(f"run again: its worker on {w.device} {cause}")
            back.append(index)
        queue.extendleft(reversed(back))
        if not stopping and outstanding and may_restart(stats):
            pool.start(w.slot)

    def drain() -> None:
        """Read what each worker still sends until every one has exited."""
        while pool.workers:
            pool.wait()
            for w in pool.live():
                for message in pool.receive(w):
                    handle(w, message)
                if not w.process.is_alive():
                    ended(w)

    try:
        try:
            for slot in range(len(devices)):
                pool.start(slot)
            while outstanding:
                if not announced and all(w.ready or w.start_error for w in pool.live()) and ever_ready:
                    announce()
                dispatch()
                if not pool.workers:
                    break
                for handle_ready in pool.wait():
                    for w in pool.live():
                        if handle_ready is w.conn:
                            for message in pool.receive(w):
                                handle(w, message)
                for w in pool.live():
                    if not w.process.is_alive():
                        ended(w)
            if not ever_ready and errors:
                raise errors[0]
            if outstanding:
                if not announced:
                    announce()
                fail_unrun(reports, outstanding, events, errors, "no worker left to run it", "every worker died")
                outstanding.clear()
            until = time.perf_counter()
            for w in pool.live():
                pool.send(w, ("stop",))
            drain()
        except KeyboardInterrupt as exc:
            report.interrupt(exc)
            stopping = True
            queue.clear()
            pool.terminate_all()
            # Each worker lets its writes in flight finish and report them, then exits.
            drain()
            until = time.perf_counter()
    except KeyboardInterrupt as exc:
        # A second Ctrl-C: stop now; nothing under a final name is partial, temporary files are removed.
        report.interrupt(exc)
        held = tuple(plan.items[i] for w in pool.live() for i in w.assigned)
        pool.kill_all()
        remove_stale_temp_files(held)
    finally:
        pool.kill_all()
    close_report(report, started, until)
    return report


def start_pool_job(plan: ImagePlan, executor: str) -> tuple[PoolReport, dict[int, FileReport], list[int]]:
    """What every executor of an image plan starts with: the report, each item's file report by index, and the
    indices to run (none with --fail-fast when a file was refused at planning), their stale temporary files
    removed."""
    report = PoolReport.for_plan(plan, executor)
    to_run = {id(item) for item in plan.to_run}
    todo = [i for i, item in enumerate(plan.items) if id(item) in to_run]
    remove_stale_temp_files(tuple(plan.items[i] for i in todo))
    return report, dict(enumerate(report.files)), todo


def finish_without_work(plan: ImagePlan, report: PoolReport, events: JobEvents) -> PoolReport:
    """A job with nothing to upscale: no worker starts; the report says what the plan decided."""
    close_report(report, announce_files(plan, report, events))
    return report


def fail_unrun(
    reports: dict[int, FileReport],
    outstanding: Iterable[int],
    events: JobEvents,
    errors: Sequence[BaseException],
    left: str,
    none: str,
) -> None:
    """Fail each outstanding item not yet run, saying ``left`` and why (the workers' errors, else ``none``)."""
    cause = "; ".join(dict.fromkeys(error_text(e) for e in errors)) or none
    for index in sorted(outstanding):
        rep = reports[index]
        if rep.status == "planned":
            rep.status, rep.message = "failed", f"{left} ({cause})"
            log.error("%s", one_line(rep.input, rep.message))
            events.file_finished(rep)


def announce_job(
    plan: ImagePlan, report: PoolReport, events: JobEvents, descriptions: Iterable[str], precisions: Iterable[str]
) -> float:
    """The workers are ready: the report's device and precision from theirs, then ``announce_files``."""
    report.device = describe_workers(descriptions)
    report.precision = ", ".join(dict.fromkeys(p for p in precisions if p))
    return announce_files(plan, report, events)
