"""Label decoding: RGB colour codes and value codes to train ids, by exact, vectorised lookup."""

from __future__ import annotations

import numpy as np

__all__ = ["IGNORE_INDEX", "decode_colour_label", "decode_value_label", "encode_colour_label"]

IGNORE_INDEX = 255


def _pack(rgb: np.ndarray) -> np.ndarray:
    """3 x H x W (or N x 3) uint8 -> one int32 code per pixel."""
    rgb = rgb.astype(np.int32)
    if rgb.ndim == 3:
        return (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
    return (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]


def decode_colour_label(
    rgb: np.ndarray, palette: list[tuple[int, int, int]], ignore_colours: tuple[tuple[int, int, int], ...] = ()
) -> tuple[np.ndarray, int]:
    """3 x H x W uint8 colour label -> (H x W uint8 train ids, number of pixels of unknown colour).

    Palette entry i is train id i. `ignore_colours` (e.g. Potsdam's black boundary) map to 255 and are
    expected; any other colour is unknown: it maps to 255 too, and is counted, never guessed to a class.
    """
    if rgb.shape[0] != 3:
        raise ValueError(f"colour labels have 3 bands, got {rgb.shape[0]}")
    codes = _pack(rgb)
    known = _pack(np.asarray(palette, dtype=np.uint8))
    order = np.argsort(known)
    sorted_known = known[order]
    pos = np.clip(np.searchsorted(sorted_known, codes), 0, len(sorted_known) - 1)
    hit = sorted_known[pos] == codes
    out = np.full(codes.shape, IGNORE_INDEX, dtype=np.uint8)
    out[hit] = order[pos[hit]]
    unknown = ~hit
    if ignore_colours:
        unknown &= ~np.isin(codes, _pack(np.asarray(ignore_colours, dtype=np.uint8)))
    return out, int(unknown.sum())


def encode_colour_label(ids: np.ndarray, palette: list[tuple[int, int, int]], ignore_colour=(0, 0, 0)) -> np.ndarray:
    """H x W train ids -> 3 x H x W uint8 colours (255 -> `ignore_colour`)."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[:] = ignore_colour
    table[: len(palette)] = palette
    return np.moveaxis(table[ids], -1, 0)


def decode_value_label(values: np.ndarray, offset: int, num_classes: int) -> tuple[np.ndarray, int]:
    """Value-coded mask (e.g. LoveDA: 0 no-data, 1..7 classes) -> (train ids = value - offset, unknown count).

    Values below `offset` are no-data (ignore, expected); values past the last class are unknown (ignore, counted).
    """
    values = values.astype(np.int32)
    ids = values - offset
    valid = (ids >= 0) & (ids < num_classes)
    out = np.where(valid, ids, IGNORE_INDEX).astype(np.uint8)
    return out, int((values >= offset + num_classes).sum())
