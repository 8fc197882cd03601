"""Wall time of the light CLI commands, which must not import torch.

    python benchmarks/cli_startup.py [--runs 10]

Runs each command as a fresh process (as a user would), reports the median and min wall
time, and for scale the time of a bare ``python -c 'import torch'`` on the same machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "srcli --help": ["-m", "srcli", "--help"],
    "srcli --version": ["-m", "srcli", "--version"],
    "srcli models list": ["-m", "srcli", "models", "list"],
    "python -c 'import torch' (reference)": ["-c", "import torch"],
    "python -c 'pass' (interpreter start)": ["-c", "pass"],
}


def time_command(args: list[str], runs: int, env: dict[str, str]) -> list[float]:
    """Wall seconds of ``runs`` fresh-process runs of ``python ARGS`` (after one warm-up)."""
    subprocess.run([sys.executable, *args], capture_output=True, env=env, check=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], capture_output=True, env=env, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    import os

    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "SRCLI_CACHE_DIR": cache}
        results = {}
        for name, args in COMMANDS.items():
            t = time_command(args, opts.runs, env)
            results[name] = {"median_s": statistics.median(t), "min_s": min(t), "runs": opts.runs}
    if opts.json:
        print(json.dumps(results, indent=2))
        return
    width = max(map(len, results))
    print(f"{'command':<{width}}  median    min   ({opts.runs} runs each, fresh process)")
    for name, r in results.items():
        print(f"{name:<{width}}  {r['median_s'] * 1000:6.0f} ms {r['min_s'] * 1000:5.0f} ms")


if __name__ == "__main__":
    main()
