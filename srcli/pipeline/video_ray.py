"""``--ray`` for video: a video's segments are Ray tasks, one at a time on each actor (one actor per device).

The work is cut exactly as ``--devices`` cuts it (``video_devices``): the driver (this process) scans each video,
opens its work folder (resumed or fresh) and cuts it into ``SegmentTask``s up front. Each Ray actor holds one
device's model (``_SegmentRunner``, loaded once, as ``ray_executor``'s image actors do) and makes one segment at a
time: it decodes the segment's time range, upscales it and encodes it into the work folder under the manifest's
name. The driver records each complete segment in the manifest, then joins, muxes and checks the output with the
one-device code, so the file out is a one-device run's.

- Actors: as many as ``ray_slots`` finds room for (one per free GPU with ``num_gpus=1``; on CPUs one per
  ``--threads`` CPUs, default 1), started once for the whole job and kept across its videos.
- Faults: an actor that dies (killed, out of memory, its node lost) fails its call with ``RayActorError``; its
  segment's temporary file is removed (a file under its final name is always complete), the segment goes back to
  the front of the queue and runs on the next free actor (a retry, counted in the report; a segment whose actor
  dies ``MAX_ATTEMPTS`` times fails its video), and a new actor takes the dead one's slot (at most
  ``MAX_RESTARTS`` per slot). An error raised by the segment's own code fails the video, as on one device.
- Ctrl-C: the actors are killed, the temporary files of the segments in flight removed, and the complete segments
  stay for ``--resume``.

Every node must see the inputs, the outputs (the work folder beside each output) and the weights under the same
paths; the tasks' paths are made absolute before they leave. ``--frames`` (a folder of frames out) is not split.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from srcli.errors import UsageError
from srcli.pipeline.device_pool import MAX_ATTEMPTS, MAX_RESTARTS, describe_workers, picklable_error
from srcli.pipeline.messages import error_text
from srcli.pipeline.ray_executor import connect_ray, import_ray, ray_slots
from srcli.pipeline.video import PlannedVideo, VideoPlan
from srcli.pipeline.video_devices import (
    SegmentHook,
    SegmentTask,
    VideoPoolReport,
    VideoWorkerStats,
    _join,
    _prepare,
    _remove_partial,
    _SegmentRunner,
    _VideoFailed,
    close_video_report,
    count_result,
    run_each_video,
)
from srcli.pipeline.video_report import StageStats, VideoEvents, VideoFileReport, VideoOptions

if TYPE_CHECKING:
    from srcli.engine.options import RunOptions

log = logging.getLogger("srcli.upscale")

__all__ = ["RaySegmentWorker", "run_video_job_on_ray"]


class RaySegmentWorker:
    """A Ray actor's body: one device's model, loaded once, and one segment at a time (``make``)."""

    def __init__(self, options: VideoOptions, run: RunOptions, hook: SegmentHook | None = None) -> None:
        """Load the model for ``run``; an error is kept for ``ready`` to return (the actor itself stays up)."""
        self.hook = hook
        self.runner: _SegmentRunner | None = None
        self.error: BaseException | None = None
        try:
            self.runner = _SegmentRunner(options, run)
        except Exception as exc:
            self.error = picklable_error(exc)

    def ready(self) -> tuple[Any, ...]:
        """``("ready", description, precision, compiled)``, or ``("start_failed", error)``."""
        if self.runner is None:
            return ("start_failed", self.error)
        import ray

        node = ray.util.get_node_ip_address()
        return ("ready", f"{self.runner.description} on {node}", self.runner.precision, self.runner.compiled)

    def make(self, task: SegmentTask) -> dict[str, Any]:
        """Run the hook (tests), then decode, upscale and encode ``task``'s segment; its result fields."""
        assert self.runner is not None
        if self.hook is not None:
            self.hook(task)
        return self.runner.run(task)


@dataclass
class _Actor:
    slot: int
    handle: Any
    ready: bool = False
    #: The segment it is making (``None``: idle or starting).
    task: SegmentTask | None = None


@dataclass
class _Outcome:
    """What one finished Ray call says: ``ready``, ``start_failed``, ``result``, ``failed`` or ``died``."""

    kind: str
    actor: _Actor
    task: SegmentTask | None = None
    value: Any = None


@dataclass
class _RayPool:
    """The job's actors, the calls in flight, and each slot's work."""

    ray: Any
    remote: Any
    options: VideoOptions
    run: RunOptions
    hook: SegmentHook | None
    stats: list[VideoWorkerStats]
    actors: dict[int, _Actor] = field(default_factory=dict)
    pending: dict[Any, tuple[int, SegmentTask | None]] = field(default_factory=dict)

    def start(self, slot: int) -> None:
        """Start (or start again) the actor of ``slot``; its ``ready`` call is in flight."""
        handle = self.remote.remote(self.options, self.run, self.hook)
        self.actors[slot] = _Actor(slot=slot, handle=handle)
        self.pending[handle.ready.remote()] = (slot, None)

    def submit(self, actor: _Actor, task: SegmentTask) -> None:
        """Give ``task`` to the idle, ready ``actor``."""
        actor.task = task
        self.pending[actor.handle.make.remote(task)] = (actor.slot, task)

    def busy(self) -> bool:
        """Whether some actor is making a segment."""
        return any(a.task is not None for a in self.actors.values())

    def forget(self, actor: _Actor) -> None:
        """Drop ``actor`` (killing it, if it still runs)."""
        if self.actors.get(actor.slot) is actor:
            del self.actors[actor.slot]
        with contextlib.suppress(Exception):
            self.ray.kill(actor.handle)

    def next(self) -> _Outcome | None:
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
            return _Outcome("died", actor, task, exc)
        except RayError as exc:  # our own code raised in the actor; the actor goes on
            if task is None:
                return _Outcome("start_failed", actor, None, UsageError(error_text(exc)))
            return _Outcome("failed", actor, task, error_text(exc))
        if task is not None:
            return _Outcome("result", actor, task, value)
        return _Outcome(value[0], actor, None, value[1:] if value[0] == "ready" else value[1])

    def became_ready(self, outcome: _Outcome) -> None:
        """Record the ``ready`` answer of a (re)started actor."""
        outcome.actor.ready = True
        self.stats[outcome.actor.slot].description = outcome.value[0]

    def kill_all(self) -> list[SegmentTask]:
        """Kill every actor at once and wait for their calls to end; the segments they were making."""
        in_flight = [a.task for a in self.actors.values() if a.task is not None]
        for actor in list(self.actors.values()):
            self.forget(actor)
        with contextlib.suppress(Exception):
            # ray.kill returns at once: the calls in flight fail once their actors are gone, not before.
            self.ray.wait(list(self.pending), num_returns=len(self.pending))
        self.pending.clear()
        return in_flight


def _absolute(task: SegmentTask) -> SegmentTask:
    """``task`` with absolute paths, the same on every node of a shared file system."""
    item = replace(task.item, input=task.item.input.absolute(), output=task.item.output.absolute())
    return replace(task, item=item, work=task.work.absolute())


def run_video_job_on_ray(
    plan: VideoPlan,
    address: str = "auto",
    *,
    events: VideoEvents | None = None,
    item_hook: SegmentHook | None = None,
    num_cpus: int | None = None,
) -> VideoPoolReport:
    """Run the video job ``plan`` on Ray, one segment task at a time per actor; the report (executor ``ray``).

    ``address``: ``auto``, ``ray://HOST:PORT`` or ``local`` (start Ray here with ``num_cpus`` CPUs and shut it down
    at the end), as for ``run_job_on_ray``; a Ray already initialised in this process is used and left running.
    The same files come out as from ``run_video_job``. ``events`` is driven from this process as segments complete.
    ``item_hook``, a picklable callable, runs in an actor just before it makes each segment (for tests). Videos run
    one after another; the segments of each run on every actor at once. See the module docstring for faults.

    Raises ``UsageError`` when Ray is not installed, the cluster cannot be reached or ``--frames`` is asked for,
    and the actors' error when none could load the model.
    """
    ray = import_ray()
    if plan.options.frames:
        raise UsageError("--ray runs a video's segments on several devices; --frames runs on one device (--device)")
    events = events or VideoEvents()
    report = VideoPoolReport.for_plan(plan, "ray")
    todo = [(i, item) for i, item in enumerate(plan.items) if item in plan.to_run]
    started = time.perf_counter()
    if not todo:
        run_each_video(plan, report, todo, events, lambda video, item, rep: None)
        close_video_report(report, started)
        return report
    owns_ray = connect_ray(ray, address, num_cpus)
    pool: _RayPool | None = None
    try:
        count, resources, run = ray_slots(ray, plan.options.run)
        remote = ray.remote(max_restarts=0, max_task_retries=0, **resources)(RaySegmentWorker)
        stats = [VideoWorkerStats(slot=i, device=run.device) for i in range(count)]
        report.workers = stats
        pool = _RayPool(ray, remote, plan.options, run, item_hook, stats)
        _start_actors(pool, report, count)
        started = time.perf_counter()

        def run_one(video: int, item: PlannedVideo, rep: VideoFileReport) -> None:
            assert pool is not None
            _run_video(pool, plan, video, item, rep, report, events)

        run_each_video(plan, report, todo, events, run_one)
    finally:
        if pool is not None:
            pool.kill_all()
        if owns_ray:
            ray.shutdown()
    close_video_report(report, started)
    return report


def _start_actors(pool: _RayPool, report: VideoPoolReport, count: int) -> None:
    """Start ``count`` actors and wait until each has loaded its model or failed; raise if none could."""
    errors: list[BaseException] = []
    precisions: list[str] = []
    for slot in range(count):
        pool.start(slot)
    while pool.pending:
        outcome = pool.next()
        if outcome is None:
            continue
        if outcome.kind == "ready":
            pool.became_ready(outcome)
            precisions.append(outcome.value[1])
            report.compiled = report.compiled or bool(outcome.value[2])
        else:
            error = (
                outcome.value if outcome.kind == "start_failed" else RuntimeError(f"a Ray actor died: {outcome.value}")
            )
            errors.append(error)
            log.warning("a Ray actor could not start: %s", error_text(error))
            pool.forget(outcome.actor)
    if not pool.actors:
        raise errors[0] if errors else RuntimeError("no Ray actor could start")
    report.device = describe_workers(pool.stats[a.slot].description for a in pool.actors.values())
    report.precision = ", ".join(dict.fromkeys(p for p in precisions if p))


def _run_video(
    pool: _RayPool,
    plan: VideoPlan,
    video: int,
    item: PlannedVideo,
    rep: VideoFileReport,
    report: VideoPoolReport,
    events: VideoEvents,
) -> None:
    """Make ``item``'s segments on the pool's actors, then join, mux and check them as a one-device run does."""
    prepared = _prepare(plan, video, item, rep)
    manifest = prepared.manifest
    queue: deque[SegmentTask] = deque(_absolute(t) for t in prepared.tasks if t.number not in prepared.done)
    attempts = {t.number: 0 for t in prepared.tasks}
    complete: dict[int, dict[str, Any]] = dict(prepared.done)
    stages = {"decode": StageStats(), "model": StageStats(), "encode": StageStats()}
    rep.stages = stages
    results: list[dict[str, Any]] = []
    frames_done = manifest.frames
    events.file_started(rep, rep.source_frames, frames_done)
    failure: list[str] = []

    def died(outcome: _Outcome) -> None:
        actor, task = outcome.actor, outcome.task
        pool.forget(actor)
        stats = pool.stats[actor.slot]
        cause = f"its Ray actor died ({type(outcome.value).__name__}: killed, out of memory or its node lost)"
        if task is not None:
            _remove_partial(task)
            log.warning("the actor on %s died; segment %d goes back in the queue", stats.description, task.number)
            attempts[task.number] += 1
            report.retries += 1
            if attempts[task.number] >= MAX_ATTEMPTS:
                failure.append(f"segment {task.number}: {cause} each of the {MAX_ATTEMPTS} times it ran")
                queue.clear()
            elif not failure:
                queue.appendleft(task)
        if (queue or pool.busy()) and stats.restarts < MAX_RESTARTS:
            stats.restarts += 1
            pool.start(actor.slot)

    try:
        while queue or pool.busy():
            for actor in list(pool.actors.values()):
                if actor.ready and actor.task is None and queue:
                    pool.submit(actor, queue.popleft())
            if not pool.pending:
                failure.append("no Ray actor left to run it")
                break
            outcome = pool.next()
            if outcome is None:
                continue
            if outcome.kind == "ready":
                pool.became_ready(outcome)
            elif outcome.kind == "start_failed":
                log.warning("a restarted Ray actor could not start: %s", error_text(outcome.value))
                pool.forget(outcome.actor)
            elif outcome.kind == "died":
                died(outcome)
            else:
                task = outcome.task
                assert task is not None
                outcome.actor.task = None
                if outcome.kind == "failed":
                    pool.stats[outcome.actor.slot].failed += 1
                    failure.append(f"segment {task.number}: {outcome.value}")
                    queue.clear()
                    continue
                result = outcome.value
                complete[task.number] = result["segment"]
                manifest.segments = [complete[n] for n in sorted(complete)]
                manifest.save()
                results.append(result)
                frames_done += count_result(result, stages, pool.stats[outcome.actor.slot])
                events.frames_done(frames_done)
                events.segment_done(rep, len(complete))
    except KeyboardInterrupt:
        for task in pool.kill_all():
            _remove_partial(task)
        raise
    if failure:
        raise _VideoFailed("; ".join(failure))
    _join(prepared, item, rep, results, plan.options)
