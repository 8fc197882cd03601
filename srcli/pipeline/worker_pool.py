"""What every multi-worker executor shares, whatever the job (images or video) and the workers (processes or Ray).

- Limits and words: ``MAX_ATTEMPTS`` / ``MAX_RESTARTS``, ``exit_cause``, ``describe_workers``, ``picklable_error``.
- The report: ``PoolReportFields`` (executor, retries, per-worker stats) mixed into a job's report class,
  ``StatsRecord`` for the per-worker stats, and ``close_report``.
- A worker process's side (``serve``, ``WorkerChannel``): SIGTERM handling, the start handshake (``ready`` or
  ``start_failed``), messages that are never cut in half, and the end of work (``stop`` or end of file). The job
  kind gives only the runner it loads and what it does with the messages it receives.
- The main process's side (``ProcessPool``): one spawned worker process per device, started, read, restarted
  and stopped the same way for every job kind.

``device_pool`` (images), ``video_devices`` (video) and ``srcli.eval.distributed`` build their executors from
these.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from srcli.errors import SrcliError, Terminated
from srcli.pipeline.messages import error_text

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from srcli.engine.options import RunOptions

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_RESTARTS",
    "PoolReportFields",
    "ProcessPool",
    "Retries",
    "StatsRecord",
    "Worker",
    "WorkerChannel",
    "available_cpus",
    "close_report",
    "describe_workers",
    "exit_cause",
    "may_restart",
    "picklable_error",
    "serve",
    "sigint_ignored",
    "worker_runs",
]

#: Times an item may be on a worker that dies (the first run and two retries); then it fails.
MAX_ATTEMPTS = 3
#: Times one device's worker is started again after dying; then that device is left out.
MAX_RESTARTS = 3

StatsT = TypeVar("StatsT")
ReportT = TypeVar("ReportT", bound="PoolReportFields[Any]")


# ---------------------------------------------------------------------------------------------
# Devices, causes and errors


def available_cpus() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_runs(run: RunOptions, devices: Sequence[str]) -> list[RunOptions]:
    """Each worker's ``RunOptions``: its device, and ``--threads`` or an equal share of the CPU cores."""
    threads = run.threads or max(1, available_cpus() // max(1, len(devices)))
    return [replace(run, device=d, threads=threads) for d in devices]


def describe_workers(descriptions: Iterable[str]) -> str:
    """One line for the report's ``device``: ``2 x cpu (1 threads)``, or the list where they differ."""
    names = list(descriptions)
    if names and all(n == names[0] for n in names):
        return names[0] if len(names) == 1 else f"{len(names)} x {names[0]}"
    return ", ".join(names)


def exit_cause(exitcode: int | None) -> str:
    """Why a worker process ended, in words (``killed by SIGKILL (out of memory?)``)."""
    if exitcode is None:
        return "lost"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"killed by {name}" + (" (out of memory?)" if -exitcode == signal.SIGKILL else "")
    return f"exited with code {exitcode}"


def picklable_error(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (srcli's errors do), else an ``SrcliError`` with its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return SrcliError(error_text(exc))


# ---------------------------------------------------------------------------------------------
# The report


class StatsRecord:
    """Mixed into a per-worker stats dataclass: its JSON form, every float rounded to 4 places."""

    def to_dict(self) -> dict[str, Any]:
        """The fields in order (``asdict``), floats rounded."""
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}  # type: ignore[call-overload]


@dataclass
class PoolReportFields(Generic[StatsT]):
    """Mixed into a job report dataclass (before it, so these fields come last): who did what, what ran again.

    ``class PoolReport(PoolReportFields[WorkerStats], JobReport)``: ``to_dict`` is the job report's plus these.
    """

    #: ``devices`` (worker processes) or ``ray``.
    executor: str = "devices"
    workers: list[StatsT] = field(default_factory=list)
    #: Item runs started again because the worker running them died.
    retries: int = 0

    @classmethod
    def from_report(cls: type[ReportT], base: Any, executor: str) -> ReportT:
        """This report type with ``base``'s fields (the planner's report), for ``executor``."""
        return cls(**{f.name: getattr(base, f.name) for f in fields(base)}, executor=executor)

    def to_dict(self) -> dict[str, Any]:
        """The job report's ``to_dict`` plus the executor, the retries and each worker's stats."""
        workers = [w.to_dict() for w in self.workers]  # type: ignore[attr-defined]
        base = super().to_dict()  # type: ignore[misc]
        return {**base, "executor": self.executor, "retries": self.retries, "workers": workers}


class Retries:
    """The one retry rule of every executor: work whose worker died runs again, ``MAX_ATTEMPTS`` runs in all."""

    def __init__(self, report: PoolReportFields[Any], keys: Iterable[Any]) -> None:
        """Count for ``report`` (its ``retries``) the runs of each of ``keys`` (items or segments)."""
        self.report = report
        self.attempts = dict.fromkeys(keys, 0)

    def died(self, key: Any) -> bool:
        """Count a run of ``key`` cut short by its worker's death; True when it may run again."""
        self.attempts[key] += 1
        self.report.retries += 1
        return self.attempts[key] < MAX_ATTEMPTS


def may_restart(stats: Any) -> bool:
    """Whether a dead worker's slot may start again (``MAX_RESTARTS`` per slot); if so, counts it in ``stats``."""
    if stats.restarts >= MAX_RESTARTS:
        return False
    stats.restarts += 1
    return True


class _Closable(Protocol):
    files: list[Any]
    interrupted: bool
    seconds: float


def close_report(report: _Closable, started: float, until: float | None = None) -> None:
    """Items never run become skipped, saying why; the job's time is set (``started`` to ``until``, else now).

    ``until`` is when the last result arrived: stopping the workers after it is no part of the job's time.
    """
    for rep in report.files:
        if rep.status == "planned":
            rep.status = "skipped"
            rep.message = "not processed (interrupted)" if report.interrupted else "not processed (--fail-fast)"
    report.seconds = (until if until is not None else time.perf_counter()) - started


# ---------------------------------------------------------------------------------------------
# A worker process's side


class _WorkerSignals:
    """SIGTERM in a worker: raise ``Terminated`` in its main thread, but never in the middle of a message."""

    def __init__(self) -> None:
        self.requested = False
        self.sending = False

    def install(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process alone answers Ctrl-C
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, signum: int, frame: Any) -> None:
        self.requested = True
        if not self.sending:
            raise Terminated()


class WorkerChannel:
    """A worker process's end of its pipe: whole messages out (from any thread), the main process's messages in."""

    def __init__(self, conn: Connection) -> None:
        """Take ``conn`` and install the worker's signal handlers (SIGINT ignored, SIGTERM as ``Terminated``)."""
        self.conn = conn
        self.signals = _WorkerSignals()
        self.signals.install()
        self._lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        """Send ``message`` whole; a SIGTERM that came meanwhile is raised (in the main thread) once it is out."""
        main_thread = threading.current_thread() is threading.main_thread()
        if main_thread:
            self.signals.sending = True
        try:
            with self._lock:
                self.conn.send(message)
        except OSError:
            pass  # the main process is gone; the receive loop ends on EOF
        finally:
            if main_thread:
                self.signals.sending = False
                if self.signals.requested:
                    raise Terminated()

    def poll(self) -> bool:
        """Whether a message from the main process is waiting."""
        return self.conn.poll()

    def receive(self) -> tuple[Any, ...] | None:
        """The main process's next message (waiting for it); ``None`` for ``stop`` or when its end is closed."""
        try:
            message = self.conn.recv()
        except EOFError:
            return None
        return None if message[0] == "stop" else message

    def close(self) -> None:
        """Close the pipe (the main process then reads end of file)."""
        with contextlib.suppress(OSError):
            self.conn.close()


class _Runner(Protocol):
    description: str
    precision: str
    compiled: bool


RunnerT = TypeVar("RunnerT", bound=_Runner)


def serve(conn: Connection, load: Callable[[], RunnerT], work: Callable[[WorkerChannel, RunnerT], None]) -> None:
    """A worker process's body: load a runner (one device's model), say so, then ``work`` on the messages received.

    Sends ``("ready", description, precision, compiled)``, or ``("start_failed", error)`` and returns. ``work``
    reads with ``WorkerChannel.receive`` until it returns ``None`` and answers with ``send``. SIGTERM from the main
    process (``Terminated``, a ``KeyboardInterrupt``) ends the worker quietly once ``work``'s clean-up has run.
    """
    channel = WorkerChannel(conn)
    try:
        try:
            runner = load()
        except KeyboardInterrupt:
            return
        except BaseException as exc:
            channel.send(("start_failed", picklable_error(exc)))
            return
        channel.send(("ready", runner.description, runner.precision, runner.compiled))
        work(channel, runner)
    except KeyboardInterrupt:
        pass  # SIGTERM from the main process: ``work`` abandoned or finished what it held
    finally:
        channel.close()


# ---------------------------------------------------------------------------------------------
# The main process's side


@dataclass
class Worker:
    """The main process's view of one worker process."""

    slot: int
    device: str
    process: BaseProcess
    conn: Connection
    ready: bool = False
    #: Work handed to it and not yet reported: its key -> whether its model started.
    assigned: dict[Any, bool] = field(default_factory=dict)
    #: Its connection reached end of file (everything it sent has been read).
    closed: bool = False
    start_error: BaseException | None = None
    first_item: float | None = None


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while a worker starts: it inherits the setting, so a Ctrl-C during its start-up reaches only
    the main process (which then stops the workers) instead of printing a traceback from each."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class ProcessPool(Generic[StatsT]):
    """The worker processes of one job (``spawn``, one per device), started, read, restarted and stopped."""

    def __init__(
        self,
        options: Any,
        devices: Sequence[str],
        target: Callable[..., None],
        extra: tuple[Any, ...],
        name: str,
        new_stats: Callable[..., StatsT],
    ) -> None:
        """Workers run ``target(conn, options, run, *extra)`` (picklable, module level) as process ``name-SLOT``.

        ``options`` is the job's options (its ``run`` gives each worker's, ``worker_runs``); ``new_stats(slot=,
        device=)`` makes each device's stats (``stats``, kept across restarts).
        """
        import multiprocessing

        self.context = multiprocessing.get_context("spawn")
        self.options = options
        self.runs = worker_runs(options.run, devices)
        self.target, self.extra, self.name = target, extra, name
        self.workers: dict[int, Worker] = {}
        self.stats: list[StatsT] = [new_stats(slot=i, device=d) for i, d in enumerate(devices)]

    def start(self, slot: int) -> Worker:
        """Start (or start again) the worker of ``slot``."""
        parent, child = self.context.Pipe(duplex=True)
        process = self.context.Process(
            target=self.target,
            args=(child, self.options, self.runs[slot], *self.extra),
            name=f"{self.name}-{slot}",
        )
        with sigint_ignored():
            process.start()
        child.close()
        worker = Worker(slot=slot, device=self.runs[slot].device, process=process, conn=parent)
        self.workers[slot] = worker
        return worker

    def live(self) -> list[Worker]:
        """The workers started and not yet forgotten."""
        return list(self.workers.values())

    def wait(self) -> list[Any]:
        """Block until a worker sends something or exits (no timeout: progress or death wakes it)."""
        from multiprocessing.connection import wait

        handles: list[Any] = []
        for w in self.workers.values():
            handles.append(w.process.sentinel)
            if not w.closed:
                handles.append(w.conn)
        return wait(handles) if handles else []

    def receive(self, worker: Worker) -> Iterator[tuple[Any, ...]]:
        """The messages ``worker`` has sent so far (after it exited: all it ever sent), read one at a time.

        One at a time, so that a Ctrl-C raised while one message is handled (by an event callback) leaves the
        rest in the pipe for the drain that follows, instead of dropping results already read (a written
        output would then miss its journal line).
        """
        while not worker.closed and worker.conn.poll():
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                worker.closed = True
                return
            yield message

    def send(self, worker: Worker, message: tuple[Any, ...]) -> bool:
        """Send ``message`` to ``worker``; False when it is dead (its sentinel says so next)."""
        try:
            worker.conn.send(message)
            return True
        except OSError:
            return False

    def terminate_all(self) -> None:
        """SIGTERM every live worker (each lets what it holds finish or abandons it, then exits)."""
        for w in self.workers.values():
            if w.process.is_alive():
                with contextlib.suppress(OSError, ValueError):
                    w.process.terminate()

    def kill_all(self) -> None:
        """SIGKILL every worker still running, wait for each and forget it."""
        for w in list(self.workers.values()):
            with contextlib.suppress(OSError, ValueError):
                if w.process.is_alive():
                    w.process.kill()
                w.process.join()
                w.conn.close()
            self.workers.pop(w.slot, None)

    def forget(self, worker: Worker) -> None:
        """Wait for the exited ``worker`` and drop it."""
        worker.process.join()
        with contextlib.suppress(OSError):
            worker.conn.close()
        self.workers.pop(worker.slot, None)
