"""``srcli eval --devices`` / ``--ray``: an evaluation's images scored by several workers, each loading its model once.

Two layers:

- :func:`map_on_devices` and :func:`map_on_ray`: an executor-neutral "map a picklable function over items",
  built from the pieces the image job's executors already use (``worker_runs`` for each worker's device and
  thread share, ``exit_cause``, ``MAX_ATTEMPTS`` / ``MAX_RESTARTS``, ``picklable_error`` and
  ``sigint_ignored`` from ``srcli.pipeline.worker_pool``; ``import_ray``, ``connect_ray`` and ``ray_slots``
  from ``srcli.pipeline.ray_executor``). A *factory* (picklable) is called once in each worker with that
  worker's ``RunOptions`` and returns the callable run on each item. The main process holds the one queue
  (in the items' order), hands each worker one item at a time, and puts the item of a worker that died back
  at the front of the queue (a retry; at most ``MAX_ATTEMPTS`` runs per item), starting the worker again (at
  most ``MAX_RESTARTS`` times per device). Results come back in the items' order, whatever ran them.
- :func:`score_on_workers`: the evaluation's per-image steps (``load_hr``, ``make_lr``, the protocol model,
  ``score_image``) as such a function, so that ``srcli.evaluate(..., devices=..., ray=...)`` gets exactly the
  numbers of a one-process run (on a CPU: with the same threads per worker as that run).

An error other than an unreadable image (which is skipped, as in one process) stops the map and is raised in
the main process, as ``evaluate`` raises it in one.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srcli.errors import SrcliError, UsageError
from srcli.pipeline.worker_pool import (
    MAX_ATTEMPTS,
    MAX_RESTARTS,
    exit_cause,
    picklable_error,
    sigint_ignored,
    worker_runs,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    import torch

    from srcli.engine.options import RunOptions
    from srcli.registry import InferenceProtocol

log = logging.getLogger("srcli")

__all__ = [
    "EvalWorker",
    "MapOutcome",
    "WorkerFactory",
    "map_on_devices",
    "map_on_ray",
    "score_on_workers",
]

#: Called once in a worker with its ``RunOptions``; returns the function run on each item. Must be picklable.
WorkerFactory = Callable[["RunOptions"], Callable[[Any], Any]]
#: Called in a worker just before it runs an item (tests use it to kill the worker there). Must be picklable.
MapHook = Callable[[Any], None]
#: Called in the main process as ``progress(done, total, index)`` after each item's result arrives.
MapProgress = Callable[[int, int, int], None]


@dataclass
class MapOutcome:
    """What a map returned: one result per item, in the items' order, and how it ran."""

    results: list[Any]
    #: What each worker's function says about itself (its ``info`` attribute, if any), one per worker started.
    infos: list[Any] = field(default_factory=list)
    #: Item runs started again because the worker running them died.
    retries: int = 0
    #: The worker processes' (or actors') ``RunOptions`` device and threads, e.g. ``2 x cpu (1 threads)``.
    workers: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Worker processes (--devices)


def _worker_main(conn: Connection, factory: WorkerFactory, run: RunOptions, hook: MapHook | None) -> None:
    """A worker process: build the function once, then run it on each ``("item", index, item)`` it is sent.

    Sends ``("ready", info)`` or ``("start_failed", error)``, then per item ``("result", index, value)`` or
    ``("error", index, error)``. SIGINT is ignored (the main process alone answers Ctrl-C).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        function = factory(run)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            conn.send(("start_failed", picklable_error(exc)))
        return
    try:
        conn.send(("ready", getattr(function, "info", None)))
        while True:
            message = conn.recv()
            if message[0] == "stop":
                return
            _, index, item = message
            if hook is not None:
                hook(item)
            try:
                reply: tuple[Any, ...] = ("result", index, function(item))
            except Exception as exc:
                reply = ("error", index, picklable_error(exc))
            conn.send(reply)
    except (EOFError, OSError):
        return  # the main process is gone
    finally:
        with contextlib.suppress(OSError):
            conn.close()


@dataclass
class _Slot:
    """The main process's view of one device's worker process."""

    slot: int
    process: BaseProcess
    conn: Connection
    ready: bool = False
    item: int | None = None
    restarts: int = 0


class _MapState:
    """The queue, the results and the retry count of one map, shared by both executors."""

    def __init__(self, items: Sequence[Any], progress: MapProgress | None) -> None:
        self.items = list(items)
        self.queue: deque[int] = deque(range(len(self.items)))
        self.results: dict[int, Any] = {}
        self.attempts = [0] * len(self.items)
        self.retries = 0
        self.progress = progress
        self.infos: list[Any] = []

    @property
    def done(self) -> bool:
        return len(self.results) == len(self.items)

    def finished(self, index: int, value: Any) -> None:
        self.results[index] = value
        if self.progress is not None:
            self.progress(len(self.results), len(self.items), index)

    def died(self, index: int, where: str, cause: str) -> None:
        """The worker running ``index`` died: the item goes back to the front of the queue, or fails for good."""
        self.attempts[index] += 1
        self.retries += 1
        if self.attempts[index] >= MAX_ATTEMPTS:
            raise SrcliError(
                f"item {index + 1} ({self.items[index]}): its worker died each of the {MAX_ATTEMPTS} times it ran it "
                f"(last: on {where}, {cause})"
            )
        log.warning("the worker on %s %s; item %d goes back in the queue", where, cause, index + 1)
        self.queue.appendleft(index)

    def outcome(self, workers: list[str]) -> MapOutcome:
        return MapOutcome([self.results[i] for i in range(len(self.items))], self.infos, self.retries, workers)


def map_on_devices(
    factory: WorkerFactory,
    items: Sequence[Any],
    run: RunOptions,
    devices: Sequence[str],
    *,
    item_hook: MapHook | None = None,
    progress: MapProgress | None = None,
) -> MapOutcome:
    """Run ``factory(worker_run)(item)`` for every item on ``devices`` (``parse_devices``), one process each.

    Each worker's ``RunOptions`` is ``run`` with its device and ``run.threads`` or an equal share of the CPU
    cores (``worker_runs``, as for ``srcli upscale --devices``). A worker that dies costs only the item it
    held, which runs again. Raises the workers' error when none could start, and an item's error (stopping
    the others) as a one-process loop would.
    """
    import multiprocessing
    from multiprocessing.connection import wait

    devices = list(devices)
    if not devices:
        raise UsageError("--devices: no device given")
    state = _MapState(items, progress)
    if not state.items:
        return state.outcome([])
    context = multiprocessing.get_context("spawn")
    runs = worker_runs(run, devices)
    slots: dict[int, _Slot] = {}
    restarts = [0] * len(devices)
    start_errors: list[BaseException] = []
    finished = False

    def start(slot: int) -> None:
        parent, child = context.Pipe(duplex=True)
        process = context.Process(
            target=_worker_main, args=(child, factory, runs[slot], item_hook), name=f"srcli-eval-worker-{slot}"
        )
        with sigint_ignored():
            process.start()
        child.close()
        slots[slot] = _Slot(slot=slot, process=process, conn=parent)

    def receive(worker: _Slot) -> None:
        while worker.slot in slots and worker.conn.poll():
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                return
            kind = message[0]
            if kind == "ready":
                worker.ready = True
                state.infos.append(message[1])
            elif kind == "start_failed":
                start_errors.append(message[1])
                log.warning("the worker on %s could not start: %s", runs[worker.slot].device, message[1])
            elif kind == "result":
                worker.item = None
                state.finished(message[1], message[2])
            else:  # "error": the one-process loop would have raised it
                raise message[2]

    def ended(worker: _Slot) -> None:
        receive(worker)
        worker.process.join()
        with contextlib.suppress(OSError):
            worker.conn.close()
        del slots[worker.slot]
        if not worker.ready:
            return  # it could not start (its error is kept), or died loading: not started again
        if worker.item is not None:
            state.died(worker.item, runs[worker.slot].device, exit_cause(worker.process.exitcode))
        if not state.done and restarts[worker.slot] < MAX_RESTARTS:
            restarts[worker.slot] += 1
            start(worker.slot)

    try:
        for slot in range(len(devices)):
            start(slot)
        while not state.done:
            for worker in list(slots.values()):
                if worker.ready and worker.item is None and state.queue:
                    index = state.queue.popleft()
                    try:
                        worker.conn.send(("item", index, state.items[index]))
                        worker.item = index
                    except OSError:
                        state.queue.appendleft(index)  # it died: its sentinel says so next
            if not slots:
                if start_errors:
                    raise start_errors[0]
                raise SrcliError("every worker died before the evaluation finished")
            handles: list[Any] = [w.process.sentinel for w in slots.values()] + [w.conn for w in slots.values()]
            wait(handles)
            for worker in list(slots.values()):
                receive(worker)
            for worker in list(slots.values()):
                if not worker.process.is_alive():
                    ended(worker)
        for worker in slots.values():
            with contextlib.suppress(OSError):
                worker.conn.send(("stop",))
        finished = True
    finally:
        for worker in slots.values():
            if finished:
                worker.process.join(timeout=5)  # each stops at once, on "stop"
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            with contextlib.suppress(OSError):
                worker.conn.close()
    return state.outcome([f"{r.device} ({r.threads} threads)" if r.device == "cpu" else r.device for r in runs])


# ---------------------------------------------------------------------------------------------
# Ray actors (--ray)


class MapActor:
    """A Ray actor's body: the function ``factory`` builds, once, and one item at a time (``process``)."""

    def __init__(self, factory: WorkerFactory, run: RunOptions, hook: MapHook | None = None) -> None:
        """Build the function for ``run``; an error is kept for ``ready`` to return."""
        self.hook = hook
        self.function: Callable[[Any], Any] | None = None
        self.error: BaseException | None = None
        try:
            self.function = factory(run)
        except Exception as exc:
            self.error = picklable_error(exc)

    def ready(self) -> tuple[Any, ...]:
        """``("ready", info)`` or ``("start_failed", error)``."""
        if self.function is None:
            return ("start_failed", self.error)
        return ("ready", getattr(self.function, "info", None))

    def process(self, item: Any) -> tuple[str, Any]:
        """``("result", value)`` or ``("error", error)`` for ``item``."""
        assert self.function is not None
        if self.hook is not None:
            self.hook(item)
        try:
            return ("result", self.function(item))
        except Exception as exc:
            return ("error", picklable_error(exc))


def map_on_ray(
    factory: WorkerFactory,
    items: Sequence[Any],
    run: RunOptions,
    address: str = "auto",
    *,
    item_hook: MapHook | None = None,
    progress: MapProgress | None = None,
    num_cpus: int | None = None,
) -> MapOutcome:
    """``map_on_devices`` on Ray: one actor per free GPU, or per ``run.threads`` (default 1) free CPUs.

    ``address`` and ``num_cpus`` as for ``run_job_on_ray`` (``local`` starts Ray here and shuts it down after).
    An actor that dies (``RayActorError``) costs only its item, which runs again on a new actor.
    """
    from srcli.pipeline.ray_executor import connect_ray, import_ray, ray_slots

    ray = import_ray()
    from ray.exceptions import RayActorError

    state = _MapState(items, progress)
    if not state.items:
        return state.outcome([])
    owns_ray = connect_ray(ray, address, num_cpus)
    actors: dict[int, Any] = {}
    pending: dict[Any, tuple[int, int | None]] = {}
    try:
        count, resources, actor_run = ray_slots(ray, run)
        remote = ray.remote(max_restarts=0, max_task_retries=0, **resources)(MapActor)
        restarts = [0] * count
        idle: set[int] = set()
        start_errors: list[BaseException] = []

        def start(slot: int) -> None:
            actors[slot] = remote.remote(factory, actor_run, item_hook)
            pending[actors[slot].ready.remote()] = (slot, None)

        for slot in range(count):
            start(slot)
        while not state.done:
            for slot in sorted(idle):
                if state.queue:
                    index = state.queue.popleft()
                    idle.discard(slot)
                    pending[actors[slot].process.remote(state.items[index])] = (slot, index)
            if not pending:
                if start_errors:
                    raise start_errors[0]
                raise SrcliError("every Ray actor died before the evaluation finished")
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            slot, index = pending.pop(ref)
            try:
                kind, value = ray.get(ref)
            except RayActorError as exc:
                with contextlib.suppress(Exception):
                    ray.kill(actors.pop(slot))
                if index is not None:
                    state.died(index, f"a Ray actor ({actor_run.device})", f"died ({type(exc).__name__})")
                if index is not None and not state.done and restarts[slot] < MAX_RESTARTS:
                    restarts[slot] += 1
                    start(slot)
                continue
            if kind == "ready":
                state.infos.append(value)
                idle.add(slot)
            elif kind == "start_failed":
                start_errors.append(value)
                with contextlib.suppress(Exception):
                    ray.kill(actors.pop(slot))
            elif kind == "result":
                assert index is not None
                state.finished(index, value)
                idle.add(slot)
            else:
                raise value
    finally:
        for handle in actors.values():
            with contextlib.suppress(Exception):
                ray.kill(handle)
        if owns_ray:
            ray.shutdown()
    threads = f" ({actor_run.threads} threads)" if actor_run.device == "cpu" else ""
    return state.outcome([f"{actor_run.device}{threads}"] * count)


# ---------------------------------------------------------------------------------------------
# The evaluation's images


@dataclass(frozen=True)
class EvalWorker:
    """The per-image evaluation as a ``WorkerFactory``: called with a worker's ``RunOptions``, it resolves it
    (device, threads), loads the protocol model once and returns the function that scores one HR path."""

    scale: int
    protocol: InferenceProtocol | None = None
    metrics: tuple[str, ...] = ("psnr", "ssim")

    def __call__(self, run: RunOptions) -> _ImageScorer:
        """Load the model for ``run``: the scorer this worker keeps."""
        from srcli.engine.options import resolve_run
        from srcli.eval.per_image import load_protocol_model

        resolved = resolve_run(run)
        model = load_protocol_model(resolved, protocol=self.protocol)
        record = model.record()
        info = {"record": record, "device": resolved.describe_device()}
        return _ImageScorer(model, self.scale, self.metrics, info)


class _ImageScorer:
    """One worker's model and the evaluation's steps for one image (``load_hr``, ``make_lr``, ``score_image``)."""

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], scale: int, metrics: tuple[str, ...], info: Any):
        self.model, self.scale, self.metrics, self.info = model, scale, metrics, info

    def __call__(self, hr_path: Path) -> tuple[dict[str, float], tuple[int, int]] | str:
        """``(scores, (width, height))`` of the image, or the note of an image that cannot be scored."""
        from srcli.errors import ImageReadError
        from srcli.eval.per_image import load_hr, score_image
        from srcli.eval.protocol import make_lr

        try:
            hr = load_hr(hr_path, self.scale)
        except ImageReadError as exc:
            return str(exc)
        sr = self.model(make_lr(hr, self.scale))
        return score_image(sr, hr, self.scale, self.metrics), (int(hr.shape[-1]), int(hr.shape[-2]))


def score_on_workers(
    run: RunOptions,
    hr_paths: Sequence[Path],
    scale: int,
    *,
    protocol: InferenceProtocol | None = None,
    devices: Sequence[str] | None = None,
    ray: str | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    item_hook: MapHook | None = None,
    num_cpus: int | None = None,
    metrics: Sequence[str] = ("psnr", "ssim"),
) -> MapOutcome:
    """Score every HR path on ``devices`` (worker processes) or on Ray at ``ray``; the outcome's results are
    ``_ImageScorer`` returns in ``hr_paths`` order, its infos each worker's protocol record and device.

    ``progress(done, total, image_name)`` is called as results arrive. ``num_cpus``: for ``ray="local"``.
    ``metrics``: the names each worker's ``score_image`` computes (see ``EvalWorker``).
    """
    if (devices is None) == (ray is None):
        raise UsageError("give devices or ray (one of them)")
    paths = [Path(p).absolute() for p in hr_paths]
    factory = EvalWorker(scale, protocol, tuple(metrics))

    def tick(done: int, total: int, index: int) -> None:
        if progress is not None:
            progress(done, total, paths[index].name)

    if devices is not None:
        return map_on_devices(factory, paths, run, devices, item_hook=item_hook, progress=tick)
    assert ray is not None
    return map_on_ray(factory, paths, run, ray, item_hook=item_hook, progress=tick, num_cpus=num_cpus)
