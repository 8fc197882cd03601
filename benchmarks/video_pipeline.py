"""Video pipeline efficiency of ``srcli upscale clip.mp4 -o out.mp4``: end-to-end fps vs model-only fps.

    .venv/bin/python benchmarks/video_pipeline.py                     # the issue's setting: 10 s of 480p, IMDN x2, CPU
    .venv/bin/python benchmarks/video_pipeline.py --seconds 1 --fps 8  # a shorter clip, same frame size

Makes a clip with imageio-ffmpeg's ffmpeg (a moving test pattern, 854x480, a sine tone, H.264 + AAC
in MP4), loads the model once, then measures in one run:

1. model-only: every frame decoded beforehand and kept in memory as the pipeline gets it (uint8
   RGB), then the pipeline's model stage over all of them in its batches, one after the other:
   conversion to float, the engine's forward passes, conversion back to 8 bits in host memory
   (what has to be done in any case);
2. end-to-end: the video job (``srcli.pipeline.video.run_video_job``, what the CLI runs) from the
   file to a verified output file with the audio muxed in: probing, decoding, model, encoding,
   muxing and the final check, wall time.

The ratio end-to-end fps / model-only fps is the pipeline's efficiency (1.0: decoding and encoding
fully hidden behind the model). Absolute fps depend on the machine; compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from srcli.engine.devices import describe_device, pick_device, resolve_precision
from srcli.engine.options import RunOptions
from srcli.engine.upscale import EngineOptions
from srcli.hub.loading import load_model
from srcli.io.video import FrameReader, decode_matrix, ffmpeg_exe, probe
from srcli.pipeline.video import VideoOptions, plan_video_job, run_video_job
from srcli.pipeline.video_stream import ModelStage

SHARED = Path(__file__).resolve().parents[2] / "shared"


def make_clip(path: Path, seconds: float, fps: int, size: str) -> None:
    """A moving test pattern with a sine tone: H.264 (yuv420p, BT.709) and AAC in MP4."""
    subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
        + ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}"]
        + ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
        + ["-vf", "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709"]
        + ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "20", "-c:a", "aac", str(path)],
        check=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="imdn")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--weights", default=None, help="checkpoint (default: ../shared/weights/IMDN_x<scale>.pth)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--size", default="854x480")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--batch", type=int, default=None, help="frames per forward pass (default: the pipeline's)")
    parser.add_argument("--codec", default=None)
    parser.add_argument("--preset", default=None)
    parser.add_argument("--segment-seconds", type=float, default=60.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    # As the CLI does (srcli.engine.host_memory); SRCLI_MALLOC_TUNING=0 measures glibc's default instead.
    from srcli.cli.common import tune_host_memory

    torch.set_num_threads(args.threads)

    device = pick_device(args.device)
    malloc_tuned = tune_host_memory() if device.type == "cpu" else False
    weights = args.weights
    if weights is None and args.model == "imdn" and (SHARED / "weights" / f"IMDN_x{args.scale}.pth").is_file():
        weights = str(SHARED / "weights" / f"IMDN_x{args.scale}.pth")
    loaded = load_model(args.model, args.scale, weights=weights, device=str(device))
    precision = resolve_precision(loaded.spec, device, args.precision)
    engine = EngineOptions(precision=precision, batch=args.batch)
    frames_per_pass = args.batch or (4 if device.type == "cuda" else 1)

    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip, args.seconds, args.fps, args.size)
        info = probe(clip)
        video = info.video
        assert video is not None and video.width and video.height
        reader = FrameReader(clip, video.index, matrix=decode_matrix(video.color, video.width, video.height))
        frames = [f.rgb for f in reader.frames()]
        stage = ModelStage(loaded, engine, device, 8)

        # Warm-up (first-call allocations, cuDNN autotuning) on one batch.
        [stage.host(y) for y in stage(frames[:frames_per_pass])[0]]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, len(frames), frames_per_pass):
            outputs, _ = stage(frames[i : i + frames_per_pass])
            for y in outputs:
                stage.host(y)  # back in host memory, as the encoder needs it
        model_seconds = time.perf_counter() - t0

        options = VideoOptions(
            run=RunOptions(
                model=args.model,
                scale=args.scale,
                weights=weights,
                device=str(device),
                precision=args.precision,
                batch=args.batch,
            ),
            output=Path(tmp) / "out.mp4",
            codec=args.codec,
            preset=args.preset,
            segment_seconds=args.segment_seconds,
        )
        t0 = time.perf_counter()
        report = run_video_job(plan_video_job([str(clip)], options), loaded=loaded)
        e2e_seconds = time.perf_counter() - t0
        file = report.files[0]
        if file.status != "done":
            raise SystemExit(f"the video job failed: {file.message}")

    n = len(frames)
    figures = {
        "settings": {**{k: v for k, v in vars(args).items() if k != "json"}, "weights": weights},
        "device": describe_device(device),
        "host_malloc_tuned": malloc_tuned,
        "precision": precision,
        "model": f"{args.model} x{args.scale}",
        "clip": f"{args.size}, {n} frames at {args.fps} fps, H.264 + AAC",
        "frames_per_pass": frames_per_pass,
        "model_only_fps": n / model_seconds,
        "end_to_end_fps": n / e2e_seconds,
        "ratio": (n / e2e_seconds) / (n / model_seconds),
        "stages": file.to_dict()["stages"],
        "verified": file.verified,
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
