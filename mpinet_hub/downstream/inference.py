"""Sliding-window inference over whole tiles, frames and rasters larger than memory.

Windows of `window` px step by `window - overlap` px, the last row/column aligned to the edge (as the
dataset grids are), so no window is padded with invented pixels. Where windows overlap, their logits are
averaged (blended), never overwritten. Output rows are handed out top to bottom as soon as no later window
touches them, so memory holds classes x window x width accumulators, never the whole raster.

    sw = SlidingWindow(model, mean, std, window=512, overlap=128, batch_size=8)  # overlap: default window // 4
    for row, logits in sw.strips(read, height, width):   # logits: (K, rows, width) float32
        ...
    logits = sw.predict_image(image)                      # image: (C, H, W) in [0, 1] -> (K, H, W)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data import Window, window_starts
from ..training import AUTOCAST_DTYPES, resolve_precision

__all__ = ["SlidingWindow", "cpu_batch_size"]


def cpu_batch_size(window: int) -> int:
    """Windows per forward pass on a CPU: 4 up to 256 px, fewer above, 1 from 363 px (see SlidingWindow)."""
    return max(1, min(4, (4 * 256 * 256) // (window * window)))


class SlidingWindow:
    """Run `model` over a raster window by window and blend the overlapping logits.

    Args:
        model: any module mapping (B, C, h, w) normalised images to (B, K, h, w) logits. Like `nn.Module.to`,
            this changes the module itself: moved to `device`, put in eval mode and, with `channels_last`,
            converted to that memory format (`model.to(memory_format=torch.contiguous_format)` undoes it).
        mean, std: per-band normalisation applied to [0, 1] inputs.
        window: window side in px (clipped to the raster's sides).
        overlap: px shared by neighbouring windows (0 <= overlap < window); default window // 4.
        batch_size: windows per forward pass; default 8 on an accelerator, and on a CPU as many as keep the
            batch's activations inside the processor's caches: 4 windows up to 256 px, fewer above, 1 from
            363 px (a 512 px window of DeepLabV3+ ResNet-18 makes a 19 MB tensor; batches of them ran 0.65-0.8x
            as fast per window, small windows 1.2-1.8x faster in batches; docs/benchmarks.md, "Batched forward
            on CPU").
        channels_last: the model and the windows in channels-last memory format; default on a CPU, where oneDNN's
            convolutions ran 1.1-1.3x faster that way at 512 px (same table), off elsewhere until measured.
        pad_multiple: each window is padded (edge replication) to a multiple of this for the model's output
            stride, and the logits cropped back.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], window: int = 512,
                 overlap: int | None = None, batch_size: int | None = None, device: str | torch.device = "cpu",
                 precision: str = "32", pad_multiple: int = 32, channels_last: bool | None = None) -> None:
        overlap = window // 4 if overlap is None else overlap
        if not 0 <= overlap < window:
            raise ValueError(f"overlap={overlap} must be at least 0 and smaller than window={window}")
        self.device = torch.device(device)
        self.channels_last = self.device.type == "cpu" if channels_last is None else channels_last
        self.model = model.to(self.device).eval()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.window, self.overlap = window, overlap
        self.batch_size = batch_size or (cpu_batch_size(window) if self.device.type == "cpu" else 8)
        self.autocast_dtype = AUTOCAST_DTYPES.get(resolve_precision(precision, self.device))
        self.pad_multiple = pad_multiple

    @property
    def in_chans(self) -> int:
        return self.mean.shape[1]

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) images in [0, 1] -> (B, K, h, w) float32 logits."""
        h, w = images.shape[-2:]
        x = (images.to(self.device, torch.float32) - self.mean) / self.std
        pad_h, pad_w = -h % self.pad_multiple, -w % self.pad_multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            out = self.model(x)
        return out[..., :h, :w].float()

    def grid(self, height: int, width: int) -> tuple[int, int, list[int], list[int]]:
        """Window height/width and the row/column offsets covering a height x width raster."""
        wh, ww = min(self.window, height), min(self.window, width)
        rows = window_starts(height, wh, max(1, wh - self.overlap))
        cols = window_starts(width, ww, max(1, ww - self.overlap))
        return wh, ww, rows, cols

    def strips(self, read: Callable[[Window], np.ndarray | torch.Tensor], height: int, width: int,
               progress: tqdm | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (first row, (K, rows, width) blended logits) top to bottom, covering the raster once.

        `read(window)` returns the (C, h, w) image of a rasterio Window, scaled to [0, 1].
        """
        wh, ww, rows, cols = self.grid(height, width)
        sums: torch.Tensor | None = None
        counts = torch.zeros(0, width, device=self.device)
        top = 0  # raster row of sums[:, 0]
        for i, row in enumerate(rows):
            grow = row + wh - top - counts.shape[0]
            if grow > 0:
                counts = torch.cat([counts, counts.new_zeros(grow, width)])
                if sums is not None:
                    sums = torch.cat([sums, sums.new_zeros(sums.shape[0], grow, width)], 1)
            for start in range(0, len(cols), self.batch_size):
                chunk = cols[start : start + self.batch_size]
                batch = torch.stack([torch.as_tensor(read(Window(col, row, ww, wh))) for col in chunk])
                if batch.shape[1] != self.in_chans:
                    raise ValueError(f"the raster has {batch.shape[1]} band(s) but the model takes {self.in_chans}")
                out = self.logits(batch)
                if sums is None:
                    sums = out.new_zeros(out.shape[1], counts.shape[0], width)
                r = row - top
                for col, logits in zip(chunk, out):
                    sums[:, r : r + wh, col : col + ww] += logits
                    counts[r : r + wh, col : col + ww] += 1
                if progress is not None:
                    progress.update(len(chunk))
            done = (rows[i + 1] if i + 1 < len(rows) else height) - top  # rows no later window touches
            yield top, sums[:, :done] / counts[:done]
            sums, counts, top = sums[:, done:], counts[done:], top + done

    def predict_image(self, image: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(C, H, W) image in [0, 1] held in memory -> (K, H, W) blended logits."""
        image = torch.as_tensor(image)

        def read(w: Window) -> torch.Tensor:
            r, c = int(w.row_off), int(w.col_off)
            return image[:, r : r + int(w.height), c : c + int(w.width)]

        return torch.cat([logits for _, logits in self.strips(read, image.shape[1], image.shape[2])], 1)

    def windows_in(self, height: int, width: int) -> int:
        """How many windows cover a height x width raster (for progress bars)."""
        _, _, rows, cols = self.grid(height, width)
        return len(rows) * len(cols)
