"""ResNet-18 training step (batch 8, 128 px) at 1 and at torch's default thread count, alternated, on this CPU
as it is now: run it quiet and again beside another job to see what `choose_cpu_threads` decides from.

    python bench/bench_threads.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import time

import timm
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="alternations of the two settings (default: %(default)s)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per setting (default: %(default)s)")
    a = p.parse_args()
    default = torch.get_num_threads()
    model = timm.create_model("resnet18", num_classes=10)
    x = torch.randn(8, 3, 128, 128)
    times: dict[int, list[float]] = {default: [], 1: []}
    print(f"load average {os.getloadavg()[0]:.2f}, {len(os.sched_getaffinity(0))} cores")
    for _ in range(a.repeats):
        for threads in times:
            torch.set_num_threads(threads)
            model(x).sum().backward()  # warm-up at this thread count
            start = time.perf_counter()
            for _ in range(a.steps):
                model(x).sum().backward()
            times[threads].append((time.perf_counter() - start) / a.steps)
    for threads, values in times.items():
        print(f"{threads} thread(s): {min(values):.3f}-{max(values):.3f} s/step")
    print(f"default / 1 thread: {min(times[default]) / min(times[1]):.2f}x")


if __name__ == "__main__":
    main()
