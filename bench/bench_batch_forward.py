"""Why batching sliding windows does not pay on a CPU: the forward pass alone, per image, against the batch,
the window side, the thread count and the memory format (DeepLabV3+ on a random encoder, eval, no_grad).

    python bench/bench_batch_forward.py                    # the table of docs/benchmarks.md, this machine
    python bench/bench_batch_forward.py --windows 512 --batches 1 8 --threads 2

Each cell: one warm-up pass, then the best of `--repeats` timed passes (the least disturbed by other load);
ms per image = time / batch. Batching can only help where a single window leaves the cores idle (small windows);
where one window already keeps them busy, a batch multiplies the working set of every layer past the caches.
Appends rows to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from benchdoc import record


def per_image_ms(model: torch.nn.Module, batch: int, side: int, channels_last: bool, repeats: int) -> float:
    x = torch.rand(batch, 3, side, side)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        model(x)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - start)
    return 1000 * best / batch


def activation_mb(model: torch.nn.Module, side: int) -> float:
    """The largest single activation of one image (MB, fp32): what a batch multiplies."""
    largest = 0

    def hook(_module, _inputs, output):
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * 4)

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model(torch.rand(1, 3, side, side))
    for h in handles:
        h.remove()
    return largest / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="mpinet_resnet18", help="(default: %(default)s)")
    ap.add_argument("--windows", type=int, nargs="+", default=[128, 512], help="window sides (default: %(default)s)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8], help="(default: %(default)s)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()],
                    help="(default: 1 and all: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="(default: %(default)s)")
    ap.add_argument("--no-record", action="store_true", help="print only")
    args = ap.parse_args()
    from mpinet_hub.downstream import build_segmentation_model, load_encoder

    torch.manual_seed(0)
    model = build_segmentation_model(load_encoder(f"random:{args.arch}"), "deeplabv3plus", 6).eval()
    for side in args.windows:
        largest = activation_mb(model, side)
        for threads in sorted(set(args.threads)):
            torch.set_num_threads(threads)
            for channels_last in (False, True):
                model = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
                ms = {b: per_image_ms(model, b, side, channels_last, args.repeats) for b in args.batches}
                base = ms[args.batches[0]]
                cells = " / ".join(f"{b}: {v:.0f} ({base / v:.2f}x)" for b, v in ms.items())
                setting = (f"DeepLabV3+ {args.arch} fp32, window {side}, {threads} thread(s), "
                           f"{'channels_last' if channels_last else 'NCHW'}")
                row = (setting, cells, f"{largest:.0f} MB x batch")
                if args.no_record:
                    print(" | ".join(row), flush=True)
                else:
                    record("Batched forward on CPU", platform.machine(), *row)


if __name__ == "__main__":
    main()
