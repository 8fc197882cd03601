"""``--ray [ADDRESS]``: one image job across a Ray cluster, one actor per device.

Ray does the cluster work (placing actors on nodes with free GPUs or CPUs, noticing a dead worker or a lost
node); this module only feeds it the plan. Each actor holds one device's model (``ItemRunner``, loaded once)
and reads, upscales and writes the items it is given with the same ``read_item`` / ``upscale_frames`` /
``write_item`` as ``run_job``, so the files are the same. Inputs and outputs must be on a path every node
sees under the same name (a shared file system); the plan's paths are made absolute before they leave.

- Where the cluster has GPUs: one actor per free GPU (``num_gpus=1``). Where it has none: one actor per
  ``--threads`` free CPUs (default 1), each running torch with that many threads.
- The driver (this process) keeps the one queue of items, largest first, gives each idle actor the next
  one, records the output journal, drives ``JobEvents`` and builds the report (``PoolReport``, per-actor
  throughput, retries).
- Faults: an actor that dies (killed, out of memory, its node lost) fails its call with ``RayActorError``;
  its item goes back to the front of the queue (a retry, at most ``MAX_ATTEMPTS`` runs in all) and a new
  actor takes its place (at most ``MAX_RESTARTS`` per slot). Writes are atomic and the temporary file a dead
  actor may have left is removed, so no output is half-written; the journal records only results that
  arrived.
- Ctrl-C: no new item is handed out and the items in flight (one per actor) finish and are recorded; a
  second Ctrl-C kills the actors at once (their temporary files are removed).

Ray is an optional dependency (``pip install -e ".[ray]"``); it is imported only here, when the job runs.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from srcli.errors import UsageError
from srcli.pipeline.device_pool import (
    MAX_ATTEMPTS,
    MAX_RESTARTS,
    ItemHook,
    ItemRunner,
    PoolReport,
    WorkerStats,
    close_report,
    describe_workers,
    finish_file,
    finish_without_work,
    gave_up_message,
    picklable_error,
    start_pool_job,
)
from srcli.pipeline.image_plan import ImagePlan, PlannedImage
from srcli.pipeline.images import JobEvents, remove_stale_temp_files
from srcli.pipeline.messages import error_text, one_line

if TYPE_CHECKING:
    from srcli.engine.options import RunOptions
    from srcli.pipeline.job import ImageOptions

log = logging.getLogger("srcli.upscale")

__all__ = ["RAY_INSTALL", "RayImageWorker", "import_ray", "run_job_on_ray"]

#: The command that installs the optional Ray dependency (from a checkout of srcli).
RAY_INSTALL = 'pip install -e ".[ray]"'


def import_ray() -> Any:
    """The ``ray`` module, or ``UsageError`` saying in one line how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(
            f'--ray needs Ray, which is not installed: {RAY_INSTALL} (or, without a checkout, pip install "srcli[ray]")'
        ) from None
    return ray


class RayImageWorker:
    """A Ray actor's body: one device's model, loaded once, and one item at a time (``process``)."""

    def __init__(self, options: ImageOptions, run: RunOptions, hook: ItemHook | None = None) -> None:
        """Load the model for ``run``; an error is kept for ``ready`` to return (the actor itself stays up)."""
        self.hook = hook
        self.runner: ItemRunner | None = None
        self.error: BaseException | None = None
        try:
            self.runner = ItemRunner(options, run)
        except Exception as exc:
            self.error = picklable_error(exc)

    def ready(self) -> tuple[Any, ...]:
        """``("ready", description, precision, compiled)``, or ``("start_failed", error)``."""
        if self.runner is None:
            return ("start_failed", self.error)
        import ray

        node = ray.util.get_node_ip_address()
        return ("ready", f"{self.runner.description} on {node}", self.runner.precision, self.runner.compiled)

    def process(self, item: PlannedImage) -> dict[str, Any]:
        """Read, upscale and write ``item``; the result fields (``ItemRunner.run_item``)."""
        assert self.runner is not None
        return self.runner.run_item(item, self.hook)


@dataclass
class _Actor:
    slot: int
    handle: Any
    ready: bool = False
    #: The item it is running (``None``: idle or starting).
    item: int | None = None
    start_error: BaseException | None = None
    first_item: float | None = None


def connect_ray(ray: Any, address: str, num_cpus: int | None) -> bool:
    """Connect to (or, for ``local``, start) Ray; True when this call did it and must shut it down."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "include_dashboard": False}
    if address == "local":
        # A cluster of this machine alone: its services listen on the loopback address only.
        ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", **kwargs)
    else:
        if num_cpus is not None:
            raise UsageError("num_cpus applies to --ray local only")
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as exc:
            raise UsageError(f"--ray {address}: cannot connect to a Ray cluster ({one_line('', str(exc))})") from None
    return True


def ray_slots(ray: Any, run: RunOptions) -> tuple[int, dict[str, Any], RunOptions]:
    """How many actors, the resources each asks Ray for, and the ``RunOptions`` each runs with.

    Counted from what is free now (other jobs may hold some of a shared cluster), so that every actor can be
    placed; a cluster whose GPUs are all taken gets one actor, which waits for a GPU as Ray schedules it.
    """
    total, free = ray.cluster_resources(), ray.available_resources()
    if int(total.get("GPU", 0)):
        return max(1, int(free.get("GPU", 0))), {"num_gpus": 1}, replace(run, device="cuda")
    per = run.threads or 1
    return max(1, int(free.get("CPU", 0)) // per), {"num_cpus": per}, replace(run, device="cpu", threads=per)


def _absolute(item: PlannedImage) -> PlannedImage:
    """``item`` with absolute paths, the same on every node of a shared file system."""
    return replace(item, input=item.input.absolute(), output=item.output.absolute())


def run_job_on_ray(
    plan: ImagePlan,
    address: str = "auto",
    *,
    events: JobEvents | None = None,
    item_hook: ItemHook | None = None,
    num_cpus: int | None = None,
) -> PoolReport:
    """Run the image job ``plan`` on Ray; the report (``PoolReport``, executor ``ray``).

    ``address``: ``auto`` (the cluster this machine belongs to), ``ray://HOST:PORT`` (Ray Client), or ``local``
    (start Ray here, with ``num_cpus`` CPUs, and shut it down at the end). When Ray is already initialised in
    this process it is used as it is and left running. ``item_hook`` runs in an actor just before the model
    starts on each item (for tests). See the module docstring for the work split, faults and Ctrl-C.

    Raises ``UsageError`` when Ray is not installed or the cluster cannot be reached, and the actors' error when
    none could load the model.
    """
    ray = import_ray()
    from ray.exceptions import RayActorError, RayError

    events = events or JobEvents()
    options = plan.options
    report, reports, todo = start_pool_job(plan, "ray")
    if not todo:
        return finish_without_work(plan, report, events)
    journal = plan.journal()
    owns_ray = connect_ray(ray, address, num_cpus)
    actors: dict[int, _Actor] = {}
    pending: dict[Any, tuple[int, int | None]] = {}
    started = time.perf_counter()
    until: float | None = None
    try:
        count, resources, run = ray_slots(ray, options.run)
        remote = ray.remote(max_restarts=0, max_task_retries=0, **resources)(RayImageWorker)
        stats = [WorkerStats(slot=i, device=run.device) for i in range(count)]
        report.workers = stats
        queue: deque[int] = deque(sorted(todo, key=lambda i: -plan.items[i].pixels))
        attempts = dict.fromkeys(todo, 0)
        outstanding = set(todo)
        errors: list[BaseException] = []
        precisions: list[str] = []
        state = {"announced": False, "ever_ready": False, "stopping": False}

        def start(slot: int) -> None:
            handle = remote.remote(options, run, item_hook)
            actors[slot] = _Actor(slot=slot, handle=handle)
            pending[handle.ready.remote()] = (slot, None)

        def announce() -> None:
            nonlocal started
            state["announced"] = True
            report.device = describe_workers(stats[a.slot].description for a in actors.values() if a.ready)
            report.precision = ", ".join(dict.fromkeys(p for p in precisions if p))
            started = time.perf_counter()
            events.started(len(plan.items), report)
            for rep in report.files:
                if rep.status != "planned":
                    if rep.status == "failed":
                        log.error("%s", one_line(rep.input, rep.message))
                    events.file_finished(rep)

        def dispatch() -> None:
            if not state["announced"] or state["stopping"]:
                return
            for actor in actors.values():
                if actor.ready and actor.item is None and queue:
                    index = queue.popleft()
                    actor.item = index
                    if actor.first_item is None:
                        actor.first_item = time.perf_counter()
                    pending[actor.handle.process.remote(_absolute(plan.items[index]))] = (actor.slot, index)
                    events.file_started(plan.items[index])

        def finished(actor: _Actor, index: int, result: dict[str, Any]) -> None:
            actor.item = None
            outstanding.discard(index)
            rep = reports[index]
            finish_file(rep, plan.items[index], result, plan, journal)
            s = stats[actor.slot]
            if rep.status == "done":
                s.images += 1
                s.output_megapixels += (rep.out_width or 0) * (rep.out_height or 0) * (rep.frames or 1) / 1e6
            else:
                s.failed += 1
            s.model_seconds += rep.model_seconds
            now = time.perf_counter()
            if actor.first_item is not None:
                s.seconds += now - actor.first_item
                actor.first_item = now
            events.file_finished(rep)
            if rep.status == "failed" and options.fail_fast:
                queue.clear()
                outstanding.intersection_update(a.item for a in actors.values() if a.item is not None)

        def died(actor: _Actor, index: int | None, exc: BaseException) -> None:
            actors.pop(actor.slot, None)
            with contextlib.suppress(Exception):
                ray.kill(actor.handle)
            s = stats[actor.slot]
            cause = f"its Ray actor died ({type(exc).__name__}: killed, out of memory or its node lost)"
            if index is not None:
                item = plan.items[index]
                remove_stale_temp_files((item,))
                if state["stopping"]:
                    return
                log.warning("the actor on %s died; %s goes back in the queue", s.description or s.device, item.input)
                attempts[index] += 1
                report.retries += 1
                rep = reports[index]
                if attempts[index] >= MAX_ATTEMPTS:
                    rep.status, rep.message = "failed", gave_up_message(s.description or s.device, cause)
                    outstanding.discard(index)
                    log.error("%s", one_line(rep.input, rep.message))
                    s.failed += 1
                    events.file_finished(rep)
                else:
                    rep.notes.append(f"run again: {cause}")
                    queue.appendleft(index)
            if not state["stopping"] and outstanding and s.restarts < MAX_RESTARTS:
                s.restarts += 1
                start(actor.slot)

        def step() -> None:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            slot, index = pending.pop(ref)
            actor = actors.get(slot)
            if actor is None:
                return
            try:
                value = ray.get(ref)
            except RayActorError as exc:
                died(actor, index, exc)
                return
            except RayError as exc:  # our own code raised in the actor: this item fails, the actor goes on
                if index is None:
                    actor.start_error = UsageError(error_text(exc))
                    errors.append(actor.start_error)
                    return
                value = {"status": "failed", "message": error_text(exc), "stage": "model"}
            if index is not None:
                finished(actor, index, value)
            elif value[0] == "ready":
                actor.ready = True
                state["ever_ready"] = True
                stats[slot].description = value[1]
                precisions.append(value[2])
                report.compiled = report.compiled or bool(value[3])
            else:
                actor.start_error = value[1]
                errors.append(value[1])
                log.warning("a Ray actor could not start: %s", error_text(value[1]))
                actors.pop(slot, None)
                with contextlib.suppress(Exception):
                    ray.kill(actor.handle)

        try:
            for slot in range(count):
                start(slot)
            while outstanding:
                if not state["announced"] and state["ever_ready"] and all(a.ready for a in actors.values()):
                    announce()
                dispatch()
                if not pending:
                    break
                step()
            if not state["ever_ready"] and errors:
                raise errors[0]
            if outstanding:
                if not state["announced"]:
                    announce()
                cause = "; ".join(dict.fromkeys(error_text(e) for e in errors)) or "every actor died"
                for index in sorted(outstanding):
                    rep = reports[index]
                    if rep.status == "planned":
                        rep.status, rep.message = "failed", f"no Ray actor left to run it ({cause})"
                        log.error("%s", one_line(rep.input, rep.message))
                        events.file_finished(rep)
            until = time.perf_counter()
        except KeyboardInterrupt as exc:
            report.interrupt(exc)
            state["stopping"] = True
            queue.clear()
            # The items in flight (one per actor) finish and are recorded.
            while any(index is not None for _, index in pending.values()):
                step()
            until = time.perf_counter()
    except KeyboardInterrupt as exc:
        # A second Ctrl-C: kill the actors now; their temporary files go, nothing partial has a final name.
        report.interrupt(exc)
        in_flight = tuple(plan.items[index] for _, index in pending.values() if index is not None)
        for actor in list(actors.values()):
            with contextlib.suppress(Exception):
                ray.kill(actor.handle)
        actors.clear()
        with contextlib.suppress(Exception):
            # ray.kill returns at once: the calls in flight fail once their actors are gone, not before.
            ray.wait(list(pending), num_returns=len(pending))
        remove_stale_temp_files(in_flight)
    finally:
        for actor in actors.values():
            with contextlib.suppress(Exception):
                ray.kill(actor.handle)
        if owns_ray:
            ray.shutdown()
    close_report(report, started, until)
    return report
