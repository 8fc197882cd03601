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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from srcli.errors import UsageError
from srcli.pipeline.device_pool import (
    ItemHook,
    ItemRunner,
    PoolReport,
    WorkerStats,
    announce_job,
    fail_unrun,
    finish_file,
    finish_without_work,
    gave_up_message,
    start_pool_job,
)
from srcli.pipeline.image_plan import ImagePlan, PlannedImage
from srcli.pipeline.images import JobEvents, remove_stale_temp_files
from srcli.pipeline.messages import error_text, one_line
from srcli.pipeline.worker_pool import Retries, close_report, may_restart, picklable_error

if TYPE_CHECKING:
    from srcli.engine.options import RunOptions

log = logging.getLogger("srcli.upscale")

StatsT = TypeVar("StatsT")

__all__ = [
    "RAY_INSTALL",
    "Outcome",
    "RayActor",
    "RayImageWorker",
    "RayPool",
    "RayWorker",
    "import_ray",
    "run_job_on_ray",
]

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


class RayWorker:
    """A Ray actor's body: one device's model (``runner_type``), loaded once; ``ready`` says how that went.

    Subclasses name the runner and the method that runs one piece of work with it.
    """

    #: ``runner_type(options, run)`` resolves ``run`` and loads its model (``ItemRunner``, ``_SegmentRunner``).
    runner_type: Callable[..., Any]

    def __init__(self, options: Any, run: RunOptions, hook: Callable[[Any], None] | None = None) -> None:
        """Load the model for ``run``; an error is kept for ``ready`` to return (the actor itself stays up)."""
        self.hook = hook
        self.runner: Any = None
        self.error: BaseException | None = None
        try:
            self.runner = self.runner_type(options, run)
        except Exception as exc:
            self.error = picklable_error(exc)

    def ready(self) -> tuple[Any, ...]:
        """``("ready", description, precision, compiled)``, or ``("start_failed", error)``."""
        if self.runner is None:
            return ("start_failed", self.error)
        import ray

        node = ray.util.get_node_ip_address()
        return ("ready", f"{self.runner.description} on {node}", self.runner.precision, self.runner.compiled)


class RayImageWorker(RayWorker):
    """A Ray actor's body: one device's model, loaded once, and one item at a time (``process``)."""

    runner_type = ItemRunner

    def process(self, item: PlannedImage) -> dict[str, Any]:
        """Read, upscale and write ``item``; the result fields (``ItemRunner.run_item``)."""
        assert self.runner is not None
        return self.runner.run_item(item, self.hook)


@dataclass
class RayActor:
    """The driver's view of one actor."""

    slot: int
    handle: Any
    ready: bool = False
    #: The work it is running (``None``: idle or starting).
    task: Any = None
    start_error: BaseException | None = None
    first_item: float | None = None


@dataclass
class Outcome:
    """What one finished Ray call says: ``ready``, ``start_failed``, ``result``, ``failed`` or ``died``.

    ``raised``: a ``start_failed`` that is an error raised by the ``ready`` call, not the actor's own answer.
    """

    kind: str
    actor: RayActor
    task: Any = None
    value: Any = None
    raised: bool = False


@dataclass
class RayPool(Generic[StatsT]):
    """The job's actors, the calls in flight, and each slot's stats: the driver side of every Ray executor."""

    ray: Any
    #: The actor class (``ray.remote(...)(RayWorker subclass)``), made with ``(options, run, hook)``.
    remote: Any
    #: The actor method that runs one piece of work (``process``, ``make``).
    method: str
    options: Any
    run: RunOptions
    hook: Any
    stats: list[StatsT]
    actors: dict[int, RayActor] = field(default_factory=dict)
    pending: dict[Any, tuple[int, Any]] = field(default_factory=dict)

    @classmethod
    def for_job(
        cls, ray: Any, worker: type[RayWorker], method: str, options: Any, hook: Any, new_stats: Callable[..., StatsT]
    ) -> RayPool[StatsT]:
        """The actors (not started yet) of a job with ``options``: as many as ``ray_slots`` finds room for.

        Ray neither restarts an actor nor retries a call: the driver does both (``Retries``, ``restart``).
        """
        count, resources, run = ray_slots(ray, options.run)
        remote = ray.remote(max_restarts=0, max_task_retries=0, **resources)(worker)
        stats = [new_stats(slot=i, device=run.device) for i in range(count)]
        return cls(ray, remote, method, options, run, hook, stats)

    def start_all(self) -> None:
        """Start every slot's actor; their ``ready`` calls are in flight."""
        for slot in range(len(self.stats)):
            self.start(slot)

    def start(self, slot: int) -> None:
        """Start (or start again) the actor of ``slot``; its ``ready`` call is in flight."""
        handle = self.remote.remote(self.options, self.run, self.hook)
        self.actors[slot] = RayActor(slot=slot, handle=handle)
        self.pending[handle.ready.remote()] = (slot, None)

    def submit(self, actor: RayActor, task: Any, payload: Any) -> None:
        """Give ``task`` (what the driver calls it) to the idle, ready ``actor``, sending it ``payload``."""
        actor.task = task
        self.pending[getattr(actor.handle, self.method).remote(payload)] = (actor.slot, task)

    def in_flight(self) -> list[Any]:
        """The work the actors are running now."""
        return [task for _, task in self.pending.values() if task is not None]

    def busy(self) -> bool:
        """Whether some actor is running a piece of work."""
        return bool(self.in_flight())

    def forget(self, actor: RayActor) -> None:
        """Drop ``actor`` (killing it, if it still runs)."""
        if self.actors.get(actor.slot) is actor:
            del self.actors[actor.slot]
        with contextlib.suppress(Exception):
            self.ray.kill(actor.handle)

    def next(self) -> Outcome | None:
        """Wait for the next call in flight to finish; ``None`` when it was an actor already dropped."""
        from ray.exceptions import RayActorError, RayError

        done, _ = self.ray.wait(list(self.pending), num_returns=1)
        slot, task = self.pending.pop(done[0])
        actor = self.actors.get(slot)
        if actor is None:
            return None
        try:
            value = self.ray.get(done[0])
        except RayActorError as exc:
            return Outcome("died", actor, task, exc)
        except RayError as exc:  # our own code raised in the actor; the actor goes on
            if task is None:
                return Outcome("start_failed", actor, None, UsageError(error_text(exc)), raised=True)
            return Outcome("failed", actor, task, error_text(exc))
        if task is not None:
            return Outcome("result", actor, task, value)
        return Outcome(value[0], actor, None, value[1:] if value[0] == "ready" else value[1])

    def became_ready(self, outcome: Outcome) -> None:
        """Record the ``ready`` answer (description, precision, compiled) of a (re)started actor."""
        outcome.actor.ready = True
        self.stats[outcome.actor.slot].description = outcome.value[0]  # type: ignore[attr-defined]

    def died(self, outcome: Outcome) -> str:
        """Drop the actor of a ``died`` outcome; the cause, in words, for its work's notes and messages."""
        self.forget(outcome.actor)
        return f"its Ray actor died ({type(outcome.value).__name__}: killed, out of memory or its node lost)"

    def restart(self, slot: int, needed: bool) -> None:
        """Start a dead actor's ``slot`` again when work is ``needed`` and it has restarts left (``may_restart``)."""
        if needed and may_restart(self.stats[slot]):
            self.start(slot)

    def kill_all(self) -> list[Any]:
        """Kill every actor at once and wait for their calls to end; the work they were running."""
        in_flight = self.in_flight()
        for actor in list(self.actors.values()):
            self.forget(actor)
        with contextlib.suppress(Exception):
            # ray.kill returns at once: the calls in flight fail once their actors are gone, not before.
            self.ray.wait(list(self.pending), num_returns=len(self.pending))
        self.pending.clear()
        return in_flight


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

    events = events or JobEvents()
    options = plan.options
    report, reports, todo = start_pool_job(plan, "ray")
    if not todo:
        return finish_without_work(plan, report, events)
    journal = plan.journal()
    owns_ray = connect_ray(ray, address, num_cpus)
    pool: RayPool[WorkerStats] | None = None
    started = time.perf_counter()
    until: float | None = None
    try:
        pool = RayPool.for_job(ray, RayImageWorker, "process", options, item_hook, WorkerStats)
        stats = report.workers = pool.stats
        actors = pool.actors
        queue: deque[int] = deque(sorted(todo, key=lambda i: -plan.items[i].pixels))
        retries = Retries(report, todo)
        outstanding = set(todo)
        errors: list[BaseException] = []
        precisions: list[str] = []
        state = {"announced": False, "ever_ready": False, "stopping": False}

        def announce() -> None:
            nonlocal started
            state["announced"] = True
            ready = [stats[a.slot].description for a in actors.values() if a.ready]
            started = announce_job(plan, report, events, ready, precisions)

        def dispatch() -> None:
            if not state["announced"] or state["stopping"]:
                return
            for actor in actors.values():
                if actor.ready and actor.task is None and queue:
                    index = queue.popleft()
                    if actor.first_item is None:
                        actor.first_item = time.perf_counter()
                    pool.submit(actor, index, _absolute(plan.items[index]))
                    events.file_started(plan.items[index])

        def finished(actor: RayActor, index: int, result: dict[str, Any]) -> None:
            actor.task = None
            outstanding.discard(index)
            rep = reports[index]
            finish_file(rep, plan.items[index], result, plan, journal)
            stats[actor.slot].count(rep, actor)
            events.file_finished(rep)
            if rep.status == "failed" and options.fail_fast:
                queue.clear()
                outstanding.intersection_update(a.task for a in actors.values() if a.task is not None)

        def died(outcome: Outcome) -> None:
            actor, index = outcome.actor, outcome.task
            cause = pool.died(outcome)
            s = stats[actor.slot]
            if index is not None:
                item = plan.items[index]
                remove_stale_temp_files((item,))
                if state["stopping"]:
                    return
                log.warning("the actor on %s died; %s goes back in the queue", s.description or s.device, item.input)
                rep = reports[index]
                if not retries.died(index):
                    rep.status, rep.message = "failed", gave_up_message(s.description or s.device, cause)
                    outstanding.discard(index)
                    log.error("%s", one_line(rep.input, rep.message))
                    s.failed += 1
                    events.file_finished(rep)
                else:
                    rep.notes.append(f"run again: {cause}")
                    queue.appendleft(index)
            pool.restart(actor.slot, not state["stopping"] and bool(outstanding))

        def step() -> None:
            outcome = pool.next()
            if outcome is None:
                return
            actor = outcome.actor
            if outcome.kind == "died":
                died(outcome)
            elif outcome.kind == "result":
                finished(actor, outcome.task, outcome.value)
            elif outcome.kind == "failed":  # our own code raised in the actor: this item fails, the actor goes on
                finished(actor, outcome.task, {"status": "failed", "message": outcome.value, "stage": "model"})
            elif outcome.kind == "ready":
                pool.became_ready(outcome)
                state["ever_ready"] = True
                precisions.append(outcome.value[1])
                report.compiled = report.compiled or bool(outcome.value[2])
            else:
                actor.start_error = outcome.value
                errors.append(outcome.value)
                if not outcome.raised:  # the actor's own answer: it has no model, so it goes
                    log.warning("a Ray actor could not start: %s", error_text(outcome.value))
                    pool.forget(actor)

        try:
            pool.start_all()
            while outstanding:
                if not state["announced"] and state["ever_ready"] and all(a.ready for a in actors.values()):
                    announce()
                dispatch()
                if not pool.pending:
                    break
                step()
            if not state["ever_ready"] and errors:
                raise errors[0]
            if outstanding:
                if not state["announced"]:
                    announce()
                fail_unrun(reports, outstanding, events, errors, "no Ray actor left to run it", "every actor died")
            until = time.perf_counter()
        except KeyboardInterrupt as exc:
            report.interrupt(exc)
            state["stopping"] = True
            queue.clear()
            # The items in flight (one per actor) finish and are recorded.
            while pool.busy():
                step()
            until = time.perf_counter()
    except KeyboardInterrupt as exc:
        # A second Ctrl-C: kill the actors now; their temporary files go, nothing partial has a final name.
        report.interrupt(exc)
        if pool is not None:
            remove_stale_temp_files(tuple(plan.items[index] for index in pool.kill_all()))
    finally:
        if pool is not None:
            pool.kill_all()
        if owns_ray:
            ray.shutdown()
    close_report(report, started, until)
    return report
