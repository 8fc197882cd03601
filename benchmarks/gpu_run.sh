#!/usr/bin/env bash
# The one script for a bare lent H100 / H200: every GPU figure of issue 10 in one run of a few minutes.
#
#   bash benchmarks/gpu_run.sh            # from the repository root, with $OUT set (the device tool sets it)
#
# Writes to $OUT (the device tool brings back at most 8 files): env.txt (GPU, driver, torch, and this
# card's measured bf16 matrix-product rate and copy bandwidth, to read the "% peak" column against),
# speed_gpu.json + speed_gpu.md (benchmarks/speed_table.py, the whole table, eager and compiled),
# speed_gpu.log (written as the table runs, so it survives a kill) and extra.tar.gz, repacked after each
# stage: ceilings.json, smoke.json (`srcli bench` through the CLI), compile_agree.* (compiled vs eager
# outputs, benchmarks/compile_speed.py) and profile/ (benchmarks/profile_model.py: where RGT's and ASID's
# time goes, by operator and kernel). Exit status: that of the table run.
#
# Dependencies. The machine's image has torch 2.11 (CUDA), typer, rich, numpy, pillow, safetensors,
# requests, filelock, imageio and tifffile. srcli imports the rest lazily, on paths this run never takes:
# platformdirs (only for the default cache folder: SRCLI_CACHE_DIR is set below), pypng (16-bit PNG
# input only; the pipeline row writes 8-bit PNGs), imageio-ffmpeg (video only), tomli (Python < 3.11).
# No wheels are needed. Should a later change need them, carry them in .whl/ (see the device README):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 --platform any -d .whl platformdirs==4.3.6 pypng==0.20220715.0
# and put this first in the run's command (carry: [".whl"]):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .whl/*.whl && export PYTHONPATH=/tmp/site
#
# Knobs (environment): DEVICE (cuda), PRECISION (bf16), BUDGET (360 s for the table: it holds the compiled
# rows, which compile for a minute or two each; with the profiles (PROFILE_SECONDS, 45 each) and the agreement
# check (AGREE_SECONDS, 60) the script fits one 600 s device call), PYTHON (python3),
# TABLE_ARGS (extra arguments for speed_table.py). A CPU dry run of the script itself:
#   OUT=/tmp/out DEVICE=cpu PRECISION=fp32 BUDGET=20 TABLE_ARGS="--scale-sizes 0.25" PYTHON=.venv/bin/python \
#     bash benchmarks/gpu_run.sh
set -uo pipefail
: "${OUT:?set OUT to the folder that receives the results}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export SRCLI_CACHE_DIR="${SRCLI_CACHE_DIR:-/tmp/srcli-cache}"
export SRCLI_OFFLINE=1
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
PRECISION="${PRECISION:-bf16}"
BUDGET="${BUDGET:-360}"
EXTRA="$(mktemp -d)"
pack() { tar -czf "$OUT/extra.tar.gz" -C "$EXTRA" . 2>/dev/null || true; }
trap 'pack; exit 143' TERM INT

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv \
        2>/dev/null || echo "no nvidia-smi"
    "$PY" -c 'import sys, os, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
          torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA", os.cpu_count(), "CPUs")'
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if [ "$DEVICE" != "cpu" ]; then
    # The card's two ceilings as found (METHOD.md): a large bf16 matrix product and a device-to-device copy.
    timeout 60 "$PY" - "$EXTRA/ceilings.json" <<'EOF' >>"$OUT/env.txt" 2>&1 || echo "ceilings: failed"
import json, sys, torch
dev = torch.device("cuda")
a, b = (torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16) for _ in range(2))
src = torch.randn(2**28, device=dev)  # 1 GiB
dst = torch.empty_like(src)
def timed(fn, n):
    fn(); torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(n):
        fn()
    e.record(); torch.cuda.synchronize()
    return s.elapsed_time(e) / 1e3 / n
mm = timed(lambda: a @ b, 20)
cp = timed(lambda: dst.copy_(src), 20)
out = {"device": torch.cuda.get_device_name(), "bf16_matmul_tflops": 2 * 8192**3 / mm / 1e12,
       "copy_tb_per_s_read_plus_write": 2 * src.numel() * 4 / cp / 1e12}
print(json.dumps(out))
open(sys.argv[1], "w").write(json.dumps(out, indent=2) + "\n")
EOF
fi

# The CLI end to end once (import, model build, warm-up, JSON).
timeout 120 "$PY" -m srcli bench -m imdn -s 4 --size 128 --batch 4 --device "$DEVICE" --precision "$PRECISION" \
    --warmup 2 --iters 10 --json >"$EXTRA/smoke.json" 2>"$EXTRA/smoke.err" || { echo "smoke: failed"; cat "$EXTRA/smoke.err"; }
pack

# shellcheck disable=SC2086  # TABLE_ARGS is a list of words
"$PY" benchmarks/speed_table.py --device "$DEVICE" --precision "$PRECISION" --budget-seconds "$BUDGET" \
    --json "$OUT/speed_gpu.json" --md "$OUT/speed_gpu.md" -v ${TABLE_ARGS:-} 2>&1 | tee "$OUT/speed_gpu.log"
status="${PIPESTATUS[0]}"
pack

if [ "$DEVICE" != "cpu" ]; then
    # Where the eager time goes, at the table's settings (ops and kernels tables, shares by kind of work).
    for spec in "rgt 128 8" "asid 256 16"; do
        set -- $spec
        timeout "${PROFILE_SECONDS:-45}" "$PY" benchmarks/profile_model.py -m "$1" --size "$2" --batch "$3" \
            --device "$DEVICE" --precision "$PRECISION" --out "$EXTRA/profile" >>"$EXTRA/profile.log" 2>&1 \
            || echo "profile $1: failed or timed out"
        pack
    done
    # Compiled against eager on the same input, in this precision: largest output difference (the table only
    # times). Same shapes as the table's RGT-S row, so inductor's on-disk cache makes the compile quick.
    timeout "${AGREE_SECONDS:-60}" "$PY" benchmarks/compile_speed.py --device "$DEVICE" --precision "$PRECISION" \
        --models rgt-s --size 128 --batch 8 --rounds 2 --iters 5 --json "$EXTRA/compile_agree.json" \
        >"$EXTRA/compile_agree.log" 2>&1 || echo "compile agreement: failed or timed out"
    pack
fi
exit "$status"
