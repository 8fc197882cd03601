"""The streamed middle of the video job: decode -> model -> encode, three stages at once.

A thread reads frames from the ``Source``, the calling thread runs the model on batches of them
(``ModelStage``), and a thread hands the results to the writer; bounded queues join the stages so
that none runs ahead of memory and the device never waits on I/O. ``run_stages`` runs them until
the source is exhausted, an error, or an interruption.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from srcli.io.video import lower_thread_priority
from srcli.pipeline.video_report import StageStats, VideoEvents, VideoFileReport, VideoOptions
from srcli.pipeline.video_sources import Item, Source
from srcli.pipeline.video_writers import FrameWriter, SegmentWriter

if TYPE_CHECKING:
    import numpy as np

    from srcli.engine.upscale import EngineOptions
    from srcli.hub.loading import LoadedModel

_END = object()


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set first (so no thread blocks forever on a full queue)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                return _END


@dataclass
class _OnDevice:
    """An upscaled frame (H, W, 3) still on the accelerator, and the event after which it is complete."""

    tensor: Any
    ready: Any

    @property
    def shape(self) -> tuple[int, ...]:
        """The frame's shape (H, W, 3)."""
        return tuple(self.tensor.shape)


class ModelStage:
    """Frames (uint8 / uint16, H x W x 3) through the model in batches, back as uint8 / uint16 arrays.

    On CUDA the results stay on the device (``_OnDevice``) and ``host`` copies each one out on a side
    stream from the encoder thread, so the model thread goes on with the next batch meanwhile.
    """

    def __init__(self, loaded: LoadedModel, engine: EngineOptions, device: Any, in_bits: int) -> None:
        self.loaded, self.engine, self.device = loaded, engine, device
        self.in_max = 65535.0 if in_bits == 16 else 255.0
        self.out_bits = 8
        self._pinned: Any = None
        self._copy_stream: Any = None

    def __call__(self, frames: list[np.ndarray]) -> tuple[list[Any], float]:
        import numpy as np
        import torch

        from srcli.engine.upscale import upscale_tensor

        stack = np.stack(frames)
        try:
            t = torch.from_numpy(stack)
        except TypeError:  # torch < 2.3 has no uint16
            t = torch.from_numpy(stack.astype(np.int32))
        if self.device.type == "cuda":
            # Ship the 8/16-bit samples (a quarter of float32's bytes) from page-locked memory, reused from
            # batch to batch (upscale_tensor waits for the device, so the previous copy is over), and
            # convert on the device.
            if self._pinned is None or self._pinned.shape != t.shape or self._pinned.dtype != t.dtype:
                self._pinned = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            t = self._pinned.copy_(t).to(self.device, non_blocking=True)
        x = t.permute(0, 3, 1, 2).float().div_(self.in_max)
        result = upscale_tensor(self.loaded, x, self.engine)
        out_max = 65535.0 if self.out_bits == 16 else 255.0
        y = result.image.mul(out_max).round_()
        dtype = torch.uint8 if self.out_bits == 8 else torch.int32
        y = y.to(dtype).permute(0, 2, 3, 1).contiguous()
        if self.device.type == "cuda":
            ready = torch.cuda.Event()
            ready.record()
            return [_OnDevice(f, ready) for f in y.unbind(0)], result.seconds
        out = y.cpu().numpy()
        if self.out_bits == 16:
            out = out.astype(np.uint16)
        return list(out), result.seconds

    def host(self, frame: Any) -> np.ndarray:
        """``frame`` in host memory (a no-op for arrays)."""
        if not isinstance(frame, _OnDevice):
            return frame
        import numpy as np
        import torch

        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(self._copy_stream):
            self._copy_stream.wait_event(frame.ready)
            # The allocator must not hand this memory to the next batch before the copy has read it.
            frame.tensor.record_stream(self._copy_stream)
            out = frame.tensor.to("cpu").numpy()
        return out.astype(np.uint16) if self.out_bits == 16 else out


def run_stages(
    source: Source,
    writer: SegmentWriter | FrameWriter,
    model: ModelStage,
    rep: VideoFileReport,
    stats: dict[str, StageStats],
    events: VideoEvents,
    options: VideoOptions,
    start_index: int,
    start_pts: int | None,
    frames_per_pass: int,
    skip_written: bool,
) -> None:
    """Run the three stages until the source is exhausted, an error, or an interruption."""
    stop = threading.Event()
    q_in: queue.Queue[Any] = queue.Queue(maxsize=options.queue_frames + frames_per_pass)
    q_out: queue.Queue[Any] = queue.Queue(maxsize=options.queue_frames + frames_per_pass)
    errors: list[BaseException] = []
    done_frames = [start_index]

    def decode() -> None:
        """The decoding thread: source items into ``q_in`` (it alone reads, and closes, the source)."""
        lower_thread_priority()
        it = None
        try:
            it = source.items(start_index, start_pts, rep, options.on_bad_frame)
            while not stop.is_set():
                t0 = time.perf_counter()
                item = next(it, None)
                stats["decode"].seconds += time.perf_counter() - t0
                if item is None:
                    break
                stats["decode"].frames += 1
                if not _put(q_in, item, stop):
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)
            stop.set()
        finally:
            # The source is closed by the thread that reads it (its decoder is not shared between threads).
            if it is not None:
                it.close()
            source.close()
            _put(q_in, _END, stop)

    def encode() -> None:
        """The encoding thread: upscaled items from ``q_out`` into the writer, then its ``finish``."""
        try:
            while True:
                item = _get(q_out, stop)
                if item is _END:
                    break
                t0 = time.perf_counter()
                if item.rgb is not None:
                    item.rgb = model.host(item.rgb)
                writer.add(item)
                stats["encode"].seconds += time.perf_counter() - t0
                stats["encode"].frames += 1
                done_frames[0] += 1
                events.frames_done(done_frames[0])
            if not stop.is_set():
                t0 = time.perf_counter()
                writer.finish()
                stats["encode"].seconds += time.perf_counter() - t0
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)
            stop.set()

    decoder = threading.Thread(target=decode, name="srcli-decode", daemon=True)
    encoder = threading.Thread(target=encode, name="srcli-encode", daemon=True)
    decoder.start()
    encoder.start()
    finished = False
    try:
        ended = False
        while not ended and not stop.is_set():
            batch: list[Item] = []
            first = _get(q_in, stop)
            if first is _END:
                break
            batch.append(first)
            while sum(1 for b in batch if b.rgb is not None) < frames_per_pass:
                try:
                    nxt = q_in.get_nowait()
                except queue.Empty:
                    break
                if nxt is _END:
                    ended = True
                    break
                batch.append(nxt)
            todo = [b for b in batch if b.rgb is not None]
            if skip_written and isinstance(writer, FrameWriter):
                todo = [b for b in todo if not writer.path(b.index).exists() or _mark_kept(b)]
            if todo:
                t0 = time.perf_counter()
                outputs, _ = model([b.rgb for b in todo])  # type: ignore[misc]
                stats["model"].seconds += time.perf_counter() - t0
                stats["model"].frames += len(todo)
                for b, y in zip(todo, outputs, strict=True):
                    b.rgb = y
                if rep.out_width is None:
                    rep.out_height, rep.out_width = outputs[0].shape[:2]
            for b in batch:
                if not _put(q_out, b, stop):
                    break
        _put(q_out, _END, stop)
        encoder.join()
        finished = not errors and not stop.is_set()
    except BaseException:
        stop.set()
        raise
    finally:
        stop.set()
        source.close()  # from here only a request: the decoding thread stops and releases the file
        decoder.join(timeout=30)
        encoder.join(timeout=60)
        if not finished:
            # The segment in progress is incomplete: remove it (complete ones stay for --resume).
            writer.abort()
    if errors:
        raise errors[0]


def _mark_kept(item: Item) -> bool:
    """A frame already written by an interrupted run: not upscaled again (the writer keeps the file)."""
    item.rgb = None
    return False
