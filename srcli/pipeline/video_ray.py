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

import logging
import time
from collections import deque
from dataclasses import replace
from typing import Any

from srcli.errors import UsageError
from srcli.pipeline.messages import error_text
from srcli.pipeline.ray_executor import Outcome, RayPool, RayWorker, connect_ray, import_ray
from srcli.pipeline.video import PlannedVideo, VideoPlan, run_each_video
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
    count_result,
)
from srcli.pipeline.video_report import StageStats, VideoEvents, VideoFileReport
from srcli.pipeline.worker_pool import MAX_ATTEMPTS, Retries, close_report, describe_workers

log = logging.getLogger("srcli.upscale")

__all__ = ["RaySegmentWorker", "run_video_job_on_ray"]


class RaySegmentWorker(RayWorker):
    """A Ray actor's body: one device's model, loaded once, and one segment at a time (``make``)."""

    runner_type = _SegmentRunner

    def make(self, task: SegmentTask) -> dict[str, Any]:
        """Run the hook (tests), then decode, upscale and encode ``task``'s segment; its result fields."""
        assert self.runner is not None
        if self.hook is not None:
            self.hook(task)
        return self.runner.run(task)


#: The job's actors (``ray_executor.RayPool``) with per-slot video stats.
_RayPool = RayPool[VideoWorkerStats]


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
    todo = plan.numbered_to_run
    started = time.perf_counter()
    if not todo:
        run_each_video(plan, report, todo, events, lambda video, item, rep: None)
        close_report(report, started)
        return report
    owns_ray = connect_ray(ray, address, num_cpus)
    pool: _RayPool | None = None
    try:
        pool = RayPool.for_job(ray, RaySegmentWorker, "make", plan.options, item_hook, VideoWorkerStats)
        report.workers = pool.stats
        _start_actors(pool, report)
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
    close_report(report, started)
    return report


def _start_actors(pool: _RayPool, report: VideoPoolReport) -> None:
    """Start every slot's actor and wait until each has loaded its model or failed; raise if none could."""
    errors: list[BaseException] = []
    precisions: list[str] = []
    pool.start_all()
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
    retries = Retries(report, (t.number for t in prepared.tasks))
    complete: dict[int, dict[str, Any]] = dict(prepared.done)
    stages = {"decode": StageStats(), "model": StageStats(), "encode": StageStats()}
    rep.stages = stages
    results: list[dict[str, Any]] = []
    frames_done = manifest.frames
    events.file_started(rep, rep.source_frames, frames_done)
    failure: list[str] = []

    def died(outcome: Outcome) -> None:
        actor, task = outcome.actor, outcome.task
        cause = pool.died(outcome)
        stats = pool.stats[actor.slot]
        if task is not None:
            _remove_partial(task)
            log.warning("the actor on %s died; segment %d goes back in the queue", stats.description, task.number)
            if not retries.died(task.number):
                failure.append(f"segment {task.number}: {cause} each of the {MAX_ATTEMPTS} times it ran")
                queue.clear()
            elif not failure:
                queue.appendleft(task)
        pool.restart(actor.slot, bool(queue or pool.busy()))

    try:
        while queue or pool.busy():
            for actor in list(pool.actors.values()):
                if actor.ready and actor.task is None and queue:
                    task = queue.popleft()
                    pool.submit(actor, task, task)
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
