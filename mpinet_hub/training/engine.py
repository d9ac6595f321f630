"""The optimisation loop every training command shares: pretrain, finetune and probe are subclasses.

One step: the subclass's `compute(batch)` gives the loss and the terms to log; a non-finite term stops the run
naming the step and the last good checkpoint; the (scaled) backward and optimiser step; `after_step()` (a
scheduler, an EMA target); one log record and one progress update; and every `save_every` steps and at the
last one, `checkpoint(final)`. Around it, the run's life: `claim_then_build` claims and locks the run folder
before anything is set up, `resume_checkpoint` loads the last checkpoint and refuses one of another kind or other
settings, `save_checkpoint` writes one (atomic, every tensor finite), `write_config` records the settings, and
`logged_loop` runs the loop with the run log (run_log.py) and a progress bar that continue from the resumed step;
`run` is that whole life, holding the folder's lock; a kind gives its `make_loader()` and `finish(last)`.

Each kind registers itself by name (`register_kind`), as timm registers its models, and `run(kind, settings)` runs
one: the study's cells, the quickstart and `run_probe` go through it. A kind registered with its CLI module is an
`mpinet` subcommand (whose `run_NAME` builds the registered class itself, to report from it).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..atomic import write_text_atomic
from ..checkpoint import atomic_save, load_checkpoint
from ..progress import progress
from ..settings import SettingsError, changed_settings
from .batches import normalisation
from .checks import check_finite, check_finite_state
from .device import AUTOCAST_DTYPES, init_distributed, resolve_device, resolve_precision
from .run_folder import RunLock, claim_run_folder
from .run_log import RunLog

__all__ = ["RUN_KINDS", "StepLoop", "register_kind", "resume_or_start", "run"]


class StepLoop:
    """A run of settings `cfg` (a settings dataclass with `device` and `out`). The engine sets the process's
    `rank`, `world` and `is_main`, the `device`, `step` (0, or the step a resume continues from) and
    `checkpoint_path` (OUT/checkpoints/last.pt, named when a run stops on a non-finite loss); `use_precision` sets
    `precision` and `scaler`, `use_normalisation` the per-band `mean_std` that `normalise` applies. The subclass
    names its `kind` and `checkpoint_format`; its `_build` sets `optimizer`, `total_steps`, `save_every` and
    `log_every`, and calls `use_precision` (and `use_normalisation`, `wrap_ddp` where it needs them); its `state()`
    adds its weights to `training_state()`; `make_loader`, `compute`, `checkpoint` and `finish` are its run."""

    distributed = True  # one process per GPU under torchrun (False: the kind runs in one process)
    kind: str  # how messages name a run of this kind ("fine-tuning")
    checkpoint_format: str  # the "format" of its checkpoints: a resume refuses any other
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    precision: str
    total_steps: int
    save_every: int
    log_every: int
    lock: RunLock | None = None
    command: tuple[str, str] | None = None  # its `mpinet` subcommand: (CLI module, description); `register_kind`

    def __init__(self, cfg: Any, resume: bool = False, overwrite: bool = False) -> None:
        """`resume` continues OUT's run (refused if a setting of its identity changed: settings.changed_settings);
        `overwrite` starts over in a folder that holds a run. Without either, an existing run in OUT is refused."""
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.rank, self.world = init_distributed(cfg.device) if self.distributed else (0, 1)
        self.is_main = self.rank == 0
        self.device = resolve_device(cfg.device)
        self.step = 0
        self.checkpoint_path = self.out / "checkpoints" / "last.pt"
        self.claim_then_build(self.out, resume, overwrite)

    def use_precision(self, precision: str) -> None:
        """`precision` resolved on the run's device (`auto` said once), with the GradScaler that fp16 on a GPU
        needs (disabled otherwise)."""
        self.precision = resolve_precision(precision, self.device, announce=self.is_main)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "16" and self.device.type == "cuda")

    def use_normalisation(self, mean: Sequence[float] | None, std: Sequence[float] | None, bands: int,
                          default: tuple[Sequence[float], Sequence[float]] | None = None) -> None:
        """The per-band (mean, std) the run's images are normalised with (`normalise`) and its artifacts record
        (`mean_std`): the given ones, else `default` (`batches.normalisation`: one value per band or an error)."""
        self.mean_std = normalisation(mean, std, bands, default)
        self._mean, self._std = (torch.tensor(v, device=self.device).view(1, -1, 1, 1) for v in self.mean_std)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) on the run's device, normalised per band by `use_normalisation`'s values."""
        return (images - self._mean) / self._std

    def wrap_ddp(self, module: nn.Module) -> nn.Module:
        """`module` as each step runs it: wrapped by DistributedDataParallel when the run has several processes."""
        if self.world == 1:
            return module
        return DistributedDataParallel(module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def claim_then_build(self, out: Path, resume: bool, overwrite: bool) -> None:
        """Lock and claim the run folder `out` (the main process; `run_folder.claim_run_folder`: nothing of a folder
        another live process writes is deleted or read), then `self._build(resume)`; a failed build releases the
        claim and removes a folder it created. The held lock is `self.lock`, for `train` to release."""
        self.lock = claim_run_folder(out, resume, overwrite) if self.is_main else None
        try:
            self._build(resume)
        except BaseException:
            if self.lock is not None:
                self.lock.abandon()
            raise

    def _build(self, resume: bool) -> None:
        """Set up the run (data, model, optimiser; `resume`: from the folder's last checkpoint)."""
        raise NotImplementedError

    def run(self) -> Any:
        """The run from its claimed folder to its last checkpoint and artifacts, holding the folder's lock: the
        settings (config.yaml), the kind's `make_loader()`, the logged loop from the resumed step, then the kind's
        `finish(last step's terms)`, whose result it returns."""
        with self.lock if self.is_main else nullcontext():
            self.write_config(self.config_note())
            loader = self.make_loader()
            return self.finish(self.logged_loop(loader, self.label()))

    def config_note(self) -> str:
        """Comment lines above the settings in config.yaml."""
        return ""

    def make_loader(self) -> Iterable[Any]:
        """One batch a step from `step` to `total_steps`, after the kind has written what it writes before its first
        step."""
        raise NotImplementedError

    def label(self) -> str:
        """The progress bar's label."""
        raise NotImplementedError

    def finish(self, last: dict[str, float]) -> Any:
        """After the last step: the kind's artifacts and result (by default the last step's terms)."""
        return last

    def training_state(self) -> dict[str, Any]:
        """What every kind's checkpoint holds beside its weights: its format, the step, the settings, the
        optimiser, the scaler and the global RNG (a resumed run reproduces the uninterrupted one)."""
        cuda = {"cuda": torch.cuda.get_rng_state()} if self.device.type == "cuda" else {}
        return {"format": self.checkpoint_format, "step": self.step, "config": dataclasses.asdict(self.cfg),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": {"torch": torch.get_rng_state(), **cuda}}

    def state(self) -> dict[str, Any]:
        """The checkpoint: `training_state()` and the kind's weights."""
        raise NotImplementedError

    def save_checkpoint(self, name: str = "last.pt") -> Path | None:
        """`state()` written to OUT/checkpoints/NAME by the main process, atomically; refused (NonFiniteLossError,
        naming the tensor) when any tensor in it is not finite, so the last good checkpoint stays."""
        if not self.is_main:
            return None
        state = self.state()
        check_finite_state(state, self.step, self.checkpoint_path)
        return atomic_save(state, self.checkpoint_path.parent / name)

    def resume_checkpoint(self) -> dict[str, Any]:
        """`checkpoint_path` loaded (`weights_only`), refused with a SettingsError (exit 2) when it is not a
        checkpoint of this kind (its "format") or was made with other identity settings than the run's
        (`settings.changed_settings`); the `training_state` it holds is restored (the kind loads its weights from
        the returned dict)."""
        ckpt = load_checkpoint(self.checkpoint_path, map_location=self.device)
        if ckpt.get("format") != self.checkpoint_format:
            raise SettingsError(f"{self.checkpoint_path} is not a {self.kind} checkpoint; give another --out")
        changed = changed_settings(self.cfg, ckpt.get("config", {}), "resume")
        if changed:
            raise SettingsError(f"{self.checkpoint_path} was trained with other settings ({', '.join(changed)}); "
                                "resume with the run's own settings (its config.yaml) or give another --out")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if "scaler" in ckpt:  # (a probe's checkpoint of before 2026-12-05 holds neither)
            self.scaler.load_state_dict(ckpt["scaler"])
            torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        self.step = int(ckpt["step"])
        return ckpt

    def compute(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        """(loss to minimise, terms to check and log by name, images in the batch) of one step's batch."""
        raise NotImplementedError

    def after_step(self) -> None:
        """After the optimiser step, before the step count advances."""

    def log_fields(self) -> dict[str, float]:
        """Fields of the step's log record beside its terms (learning rate, momentum, ...)."""
        return {}

    def checkpoint(self, final: bool) -> None:
        """Every `save_every` steps and at the last one (`final`)."""

    def autocast(self) -> AbstractContextManager:
        """The precision's autocast on the run's device (a no-op at 32 bits)."""
        dtype = AUTOCAST_DTYPES.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def write_config(self, note: str = "") -> None:
        """OUT/config.yaml, atomically, from the main process: the settings the run was made with, as YAML, after
        `note` (comment lines)."""
        if self.is_main:
            write_text_atomic(self.out / "config.yaml", note + yaml.safe_dump(dataclasses.asdict(self.cfg),
                                                                              sort_keys=False))

    def logged_loop(self, loader: Any, desc: str) -> dict[str, float]:
        """`loop` with the run log and a progress bar (main process) that continue from the current step."""
        with (
            RunLog(self.out, self.step, enabled=self.is_main) as log,
            progress(total=self.total_steps, initial=self.step, disable=not self.is_main, unit="step",
                     desc=desc) as bar,
        ):
            return self.loop(loader, log, bar)

    def loop(self, loader: Any, log: RunLog, bar: Any) -> dict[str, float]:
        """Train on `loader`'s batches (one a step, from `step` to `total_steps`); returns the last step's terms."""
        last: dict[str, float] = {}
        tick = time.perf_counter()
        for batch in loader:
            loss, terms, images = self.compute(batch)
            check_finite(terms, self.step, self.checkpoint_path)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.after_step()
            self.step += 1
            now = time.perf_counter()
            rate = images * self.world / (now - tick)
            tick = now
            last = {k: float(v.detach()) for k, v in terms.items()}
            if self.is_main:
                if self.step % self.log_every == 0 or self.step == self.total_steps:
                    log.write({"step": self.step, **last, **self.log_fields(), "images_per_s": rate})
                bar.set_postfix({k: f"{v:.3f}" for k, v in last.items()} | {"img/s": f"{rate:.1f}"})
                bar.update(1)
            if self.step % self.save_every == 0 or self.step == self.total_steps:
                self.checkpoint(final=self.step == self.total_steps)
        return last


RUN_KINDS: dict[str, type[StepLoop]] = {}  # name -> the StepLoop subclass that runs it (`register_kind`)


def register_kind(name: str, command: str | None = None,
                  description: str = "") -> Callable[[type[StepLoop]], type[StepLoop]]:
    """Class decorator: `run(name, settings)` runs `cls(settings, resume=..., overwrite=...).run()`; with `command`
    (a module holding `add_NAME_arguments(parser)` and `run_NAME(args) -> int`), `mpinet NAME` is a subcommand
    described by `description`."""

    def register(cls: type[StepLoop]) -> type[StepLoop]:
        if name in RUN_KINDS:
            raise ValueError(f"run kind {name!r} is registered twice")
        RUN_KINDS[name] = cls
        cls.command = (command, description) if command else None
        return cls

    return register


def resume_or_start(runner: type[StepLoop], settings: Any) -> StepLoop:
    """`runner` set up on `settings` (with `out`): continuing the run in `settings.out` where it has a last
    checkpoint, else starting there over what a start stopped before its first checkpoint left."""
    resume = (Path(settings.out) / "checkpoints" / "last.pt").is_file()
    return runner(settings, resume=resume, overwrite=not resume)


def run(kind: str, settings: Any) -> Any:
    """Run `settings` as a `kind` run (`resume_or_start`, as the commands that file runs as cells of their own
    folders call it) and return its result."""
    if kind not in RUN_KINDS:
        raise ValueError(f"run kind {kind!r} is not registered (known: {', '.join(RUN_KINDS)}); import the module "
                         "that registers it")
    return resume_or_start(RUN_KINDS[kind], settings).run()
