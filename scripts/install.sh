#!/usr/bin/env bash
# Install srcli into .venv with the PyTorch build that fits this machine, then srcli itself
# (editable, with the dev tools). Run from anywhere; it works in the repository root.
#
#   bash scripts/install.sh             # pick the torch build, install, report what was installed
#   bash scripts/install.sh --dry-run   # print the decision and the pip commands, install nothing
#
# Which torch build (torch==2.13.0, pinned):
#   - an NVIDIA driver on Linux (nvidia-smi on PATH, or /proc/driver/nvidia/version): the CUDA
#     build from PyPI (torch, triton and the nvidia-* libraries: about 3 GB);
#   - macOS: the default wheel, which includes Apple's MPS backend;
#   - otherwise the CPU build (one wheel of about 190 MB) from the PyTorch CPU index, added with
#     --extra-index-url (its 2.x.y+cpu version sorts above the plain one, so pip takes it). When
#     that index does not answer within 5 s, plain `pip install torch==VERSION` is used instead,
#     with a warning: on an ordinary Linux machine that is the CUDA build.
#
# Environment:
#   SRCLI_TORCH=auto|cpu|cuda|mps|skip   force a build; skip = keep the torch already in the venv
#                                        (or let `pip install -e .` pull one)      [auto]
#   SRCLI_TORCH_CPU_INDEX=URL            the CPU build's index [https://download.pytorch.org/whl/cpu]
#   SRCLI_TORCH_INDEX=URL                an extra index for torch whatever the build (e.g. a CUDA
#                                        version's index https://download.pytorch.org/whl/cu126,
#                                        or a local mirror); skips the CPU index and its check
#   SRCLI_PYTHON=python3.X               the interpreter for a new .venv (Python >= 3.10)
#   SRCLI_VENV=DIR                       the virtualenv folder [.venv]
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0
VENV=${SRCLI_VENV:-.venv}
CHOICE=${SRCLI_TORCH:-auto}
CPU_INDEX=${SRCLI_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
TORCH_INDEX=${SRCLI_TORCH_INDEX:-}
DRY_RUN=0

for arg in "$@"; do
  case "$arg" in
    --dry-run | -n) DRY_RUN=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "install.sh: unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

say() { printf 'install.sh: %s\n' "$*"; }
die() {
  printf 'install.sh: error: %s\n' "$*" >&2
  exit 1
}
run() {
  printf '+ %s\n' "$*"
  if [ "$DRY_RUN" -eq 0 ]; then "$@"; fi
}

# --- Python >= 3.10 ---------------------------------------------------------------------------
py_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; }

if [ -x "$VENV/bin/python" ]; then
  py_ok "$VENV/bin/python" || die "$VENV uses Python $("$VENV/bin/python" -V 2>&1); srcli needs >= 3.10: remove $VENV and run again"
  say "reusing $VENV ($("$VENV/bin/python" -V 2>&1))"
  NEW_VENV=0
else
  PYTHON=${SRCLI_PYTHON:-}
  if [ -z "$PYTHON" ]; then
    for candidate in python3 python3.13 python3.12 python3.11 python3.10 python; do
      if command -v "$candidate" >/dev/null 2>&1 && py_ok "$candidate"; then
        PYTHON=$candidate
        break
      fi
    done
    [ -n "$PYTHON" ] || die "no Python >= 3.10 found (tried python3, python3.13 ... python3.10); set SRCLI_PYTHON"
  else
    py_ok "$PYTHON" || die "SRCLI_PYTHON=$PYTHON is not a Python >= 3.10"
  fi
  say "creating $VENV with $PYTHON ($("$PYTHON" -V 2>&1))"
  NEW_VENV=1
fi

# --- which torch build --------------------------------------------------------------------------
os=$(uname -s)
nvidia_driver() {
  if [ -r /proc/driver/nvidia/version ]; then
    head -n 1 /proc/driver/nvidia/version | grep -o '[0-9][0-9]*\.[0-9][0-9.]*' | head -n 1 || true
    return 0
  fi
  if command -v nvidia-smi >/dev/null 2>&1; then
    # The version if the driver answers (5 s at most), else just "present".
    v=$(timeout 5 nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1) || true
    echo "${v:-present}"
    return 0
  fi
  return 1
}

reason=""
if [ "$CHOICE" = auto ]; then
  if [ "$os" = Darwin ]; then
    CHOICE=mps
    reason="macOS"
  elif driver=$(nvidia_driver); then
    CHOICE=cuda
    reason="NVIDIA driver ${driver:-present}"
  else
    CHOICE=cpu
    reason="no NVIDIA driver: no nvidia-smi, no /proc/driver/nvidia/version"
  fi
else
  reason="SRCLI_TORCH=$CHOICE"
fi

# reachable URL: true when URL answers an HTTP HEAD within 5 s (proxies from the environment apply).
reachable() {
  "${PYTHON:-$VENV/bin/python}" - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request
try:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="HEAD"), timeout=5).close()
except Exception:
    sys.exit(1)
EOF
}

TORCH_ARGS=("torch==$TORCH_VERSION")
case "$CHOICE" in
  cpu)
    if [ -n "$TORCH_INDEX" ]; then
      TORCH_ARGS+=(--extra-index-url "$TORCH_INDEX")
      say "torch $TORCH_VERSION, CPU build ($reason), from $TORCH_INDEX: one wheel of about 190 MB (+ ~10 MB: sympy, networkx, ...)"
    elif reachable "${CPU_INDEX%/}/torch/"; then
      TORCH_ARGS+=(--extra-index-url "$CPU_INDEX")
      say "torch $TORCH_VERSION, CPU build ($reason), from $CPU_INDEX: one wheel of about 190 MB (+ ~10 MB: sympy, networkx, ...)"
    else
      say "torch $TORCH_VERSION, CPU build wanted ($reason), but $CPU_INDEX is not reachable (checked with a 5 s timeout):"
      say "  falling back to plain 'pip install torch==$TORCH_VERSION' (pip's configured indexes)."
      say "  WARNING: from PyPI on Linux that is the CUDA build (about 3 GB); the build installed is reported below."
      say "  To avoid it, point SRCLI_TORCH_INDEX (or SRCLI_TORCH_CPU_INDEX) at a reachable copy of the CPU index."
    fi
    ;;
  cuda)
    [ "$os" != Darwin ] || die "SRCLI_TORCH=cuda: there is no CUDA build of torch for macOS"
    if [ -n "$TORCH_INDEX" ]; then
      TORCH_ARGS+=(--extra-index-url "$TORCH_INDEX")
      say "torch $TORCH_VERSION, CUDA build ($reason), from $TORCH_INDEX: about 3 GB (torch, triton and the nvidia-* libraries)"
    else
      say "torch $TORCH_VERSION, CUDA build ($reason), from PyPI: about 3 GB (torch, triton and the nvidia-* libraries)"
      say "  (an older driver may need another CUDA version: SRCLI_TORCH_INDEX=https://download.pytorch.org/whl/cuXXX)"
    fi
    ;;
  mps)
    [ -z "$TORCH_INDEX" ] || TORCH_ARGS+=(--extra-index-url "$TORCH_INDEX")
    say "torch $TORCH_VERSION, default macOS wheel with the MPS backend ($reason): under 100 MB"
    ;;
  skip)
    TORCH_ARGS=()
    say "torch: not installed by this script ($reason); 'pip install -e .' takes the one in $VENV, or pulls torch>=2.2"
    ;;
  *) die "SRCLI_TORCH=$CHOICE: expected auto, cpu, cuda, mps or skip" ;;
esac
say "then srcli and its dependencies, about 105 MB into a new venv (imageio-ffmpeg with its ffmpeg binary 65 MB, numpy 17 MB, ruff 11 MB, Pillow 7 MB, ...)"

# --- install ------------------------------------------------------------------------------------
if [ "$NEW_VENV" -eq 1 ]; then
  if ! run "$PYTHON" -m venv "$VENV"; then
    rm -rf "$VENV"
    die "'$PYTHON -m venv' failed; on Debian/Ubuntu install the venv module first (apt install python3-venv)"
  fi
fi
PIP=("$VENV/bin/python" -m pip)
if [ "${#TORCH_ARGS[@]}" -gt 0 ]; then
  run "${PIP[@]}" install "${TORCH_ARGS[@]}"
fi
run "${PIP[@]}" install -e ".[dev]"

if [ "$DRY_RUN" -eq 1 ]; then
  say "dry run: nothing installed"
  exit 0
fi

# --- what was installed -------------------------------------------------------------------------
"$VENV/bin/python" - "$CHOICE" <<'EOF'
import sys
import torch

choice = sys.argv[1]
if torch.version.cuda:
    build = f"CUDA {torch.version.cuda} build"
elif sys.platform == "darwin":
    build = "macOS build (MPS)"
else:
    build = "CPU build"
devices = ["cpu"]
if torch.cuda.is_available():
    devices.insert(0, f"cuda ({torch.cuda.get_device_name(0)})")
mps = getattr(torch.backends, "mps", None)
if mps is not None and mps.is_available():
    devices.insert(0, "mps")
print(f"install.sh: installed torch {torch.__version__}, {build}; devices: {', '.join(devices)}")
if choice == "cpu" and torch.version.cuda:
    print("install.sh: WARNING: a CUDA build was installed where the CPU build was wanted (see above)")
EOF
"$VENV/bin/srcli" --version
say "done: run $VENV/bin/srcli (or activate with: source $VENV/bin/activate)"
