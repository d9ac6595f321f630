"""A run's log (JSON lines and TensorBoard), kept to one row a step across resumes, and its loss plot."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..atomic import WriteFailed, atomic_output, free_space, write_text_atomic

__all__ = ["RunLog", "plot_losses", "trim_log"]


def trim_log(path: Path, step: int) -> None:
    """Drop log rows past `step` (written after the checkpoint a run resumes from), so a resumed run's log has
    each step once."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if not kept:  # a run started over from step 0 (a probe rerun after a kill) keeps no row
        path.unlink()
    elif len(kept) != len(lines):
        write_text_atomic(path, "".join(line + "\n" for line in kept))


def _quiet_tensorboard_threads() -> None:
    """TensorBoard writes from a thread of its own; an OSError there (a full disk) printed a thread traceback,
    then came back in the writing thread, where RunLog names it in one line. Only that traceback is dropped."""
    previous = threading.excepthook
    if getattr(previous, "_mpinet_quiet", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread" and issubclass(args.exc_type, OSError):
            return
        previous(args)

    hook._mpinet_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class RunLog:
    """A run's log: OUT/log.jsonl, and TensorBoard event files in OUT/tensorboard when tensorboard is installed
    (numeric fields as scalars at the record's step). Opened at the step a run continues from, it first drops
    the rows written past that step (after the checkpoint it resumes from) from both, so each step is logged once.
    `enabled=False` (ranks other than 0) writes nothing."""

    def __init__(self, out: Path, step: int, enabled: bool = True) -> None:
        self.jsonl = self.tensorboard = None
        self.out = out
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        trim_log(out / "log.jsonl", step)
        self.jsonl = (out / "log.jsonl").open("a")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional: the JSON lines hold everything
            return
        _quiet_tensorboard_threads()
        self.tensorboard = SummaryWriter(str(out / "tensorboard"), purge_step=step + 1)

    def write(self, record: dict) -> None:
        if self.jsonl is None:
            return
        with self._named(self.out / "log.jsonl"):
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()
        if self.tensorboard is not None:
            with self._named(self.out / "tensorboard"):
                for key, value in record.items():
                    if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                        self.tensorboard.add_scalar(key, value, record["step"])

    @contextmanager
    def _named(self, where: Path) -> Iterator[None]:
        """An OSError (a full disk) becomes the one-line WriteFailed naming `where` and the free space."""
        try:
            yield
        except OSError as err:
            if isinstance(err, WriteFailed):
                raise
            raise WriteFailed(f"could not write {where} ({err.strerror or err}); {free_space(self.out)}") from err

    def close(self) -> None:
        sinks, self.jsonl, self.tensorboard = (self.jsonl, self.tensorboard), None, None
        for where, sink in zip((self.out / "log.jsonl", self.out / "tensorboard"), sinks):
            if sink is not None:
                with self._named(where):
                    sink.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            self.close()
        except WriteFailed:
            if exc_type is None:  # else the error already on its way is the one to say
                raise


def plot_losses(log_path: Path, png_path: Path, keys: tuple[str, ...] = ("total", "ins", "pix", "ffl"),
                weights: dict[str, float | str] | None = None, title: str | None = None,
                lines: dict[str, float] | None = None) -> None:
    """PNG of the logged loss terms in `keys` (those present) against step, from a JSON-lines log.

    `weights` scales a term as it enters the total (a number, or the name of a logged field such as `w_ffl`), so
    the plotted terms add up to `total`; `lines` draws labelled horizontal references (e.g. chance for InfoNCE).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not records:
        return
    keys = tuple(k for k in keys if k in records[-1])
    weights = weights or {}
    fig, ax = plt.subplots(figsize=(8, 4))
    steps = [r["step"] for r in records]
    for k in keys:
        w = weights.get(k, 1.0)
        scale = [float(r.get(w, 0.0)) if isinstance(w, str) else float(w) for r in records]
        label = k if k == "total" or w == 1.0 else f"{w} x {k}" if isinstance(w, str) else f"{w:g} x {k}"
        ax.plot(steps, [r.get(k) * c for r, c in zip(records, scale)], label=label, lw=2 if k == "total" else 1.2)
    for label, value in (lines or {}).items():
        ax.axhline(value, color="grey", ls="--", lw=1, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("loss (as weighted in the total)")
    ax.set_title(title or f"losses ({png_path.parent.name})", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
