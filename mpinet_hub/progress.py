"""Progress bars that stay readable in a log file: tqdm on a terminal, plain lines elsewhere.

tqdm redraws one line with carriage returns, which a log file, a pipe or a CI console keeps as one very long
line. When the stream is not a terminal, `progress` prints the same status as separate lines, at most one every
`LINE_SECONDS` seconds (and at the end).
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

__all__ = ["LINE_SECONDS", "progress"]

LINE_SECONDS = 30.0


class _Lines(tqdm):
    """tqdm that writes each refresh as its own line instead of redrawing it."""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        line = (self.__str__() if msg is None else msg).strip()
        if line:
            self.fp.write(line + "\n")
            self.fp.flush()
        return False  # nothing on screen to clear: tqdm's close then writes no carriage return

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)  # shown with the next timed line, not at once

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        super().set_description(desc, refresh=False)

    def close(self) -> None:
        if not self.disable and not getattr(self, "_final_line", False):
            self._final_line = True
            self.display()  # the final state, even when the last refresh came earlier than `mininterval`
        super().close()


def progress(*args: Any, **kwargs: Any) -> tqdm:
    """`tqdm(*args, **kwargs)`, as plain lines when its stream (default stderr) is not a terminal."""
    stream = kwargs.get("file") or sys.stderr
    if kwargs.get("disable") or getattr(stream, "isatty", lambda: False)():
        return tqdm(*args, **kwargs)
    kwargs.setdefault("mininterval", LINE_SECONDS)
    kwargs.setdefault("ascii", True)
    kwargs.setdefault("ncols", 110)
    kwargs["leave"] = False  # the last line is already written; tqdm would add an empty one
    return _Lines(*args, **kwargs)
