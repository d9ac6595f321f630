"""`mpinet finetune`, `probe`, `evaluate`, `predict`, `study` and `quickstart`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data import DATA_ROOT_HELP, DATASETS, PROTOCOLS
from ..settings import add_settings_arguments, settings_from_args
from ..training import PRECISIONS, resolve_device
from ..training.run_folder import add_run_folder_arguments


def _inference_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--window", type=int, default=512, help="sliding-window side in px")
    p.add_argument("--overlap", type=int, help="px shared by neighbouring windows, logits averaged (default window/4)")
    p.add_argument("--batch-size", type=int,
                   help="windows per forward pass (default 8 on GPU; on CPU 4 up to 256 px windows, 1 from 363 px: "
                   "larger batches overflow the caches there, docs/benchmarks.md)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: bf16 on a GPU that supports it, else fp32")


# --- finetune
def add_finetune_arguments(p: argparse.ArgumentParser) -> None:
    from ..pretrain.config import packaged_configs
    from .finetune import FinetuneConfig

    p.description = ("Fine-tune an SMP decoder with an encoder SPEC on a fixed, seeded fraction of the labeled "
                     "training patches. Writes RUN/labeled_patches.json, log.jsonl, loss.png, checkpoints/last.pt "
                     "and RUN/model (smp.from_pretrained reloads it offline).")
    add_run_folder_arguments(p)
    p.add_argument("--config", help="YAML with any of the settings below, or a packaged recipe by name: "
                   f"{', '.join(packaged_configs('finetune'))}; it overrides the defaults shown, and flags override it")
    add_settings_arguments(p, FinetuneConfig, config=True, skip=("device",))


def run_finetune(args: argparse.Namespace) -> int:
    from .finetune import FinetuneConfig, Finetuner

    cfg = FinetuneConfig.from_sources(args.config, **settings_from_args(FinetuneConfig, args))
    tuner = Finetuner(cfg, resume=args.resume, overwrite=args.overwrite)
    if tuner.is_main:
        print(f"{len(tuner.subset)} of {len(tuner.dataset)} labeled patches "
              f"({100 * len(tuner.subset) / len(tuner.dataset):.3g}%; --label-fraction {cfg.label_fraction:g}, at "
              "least one patch), "
              f"encoder {cfg.encoder}, decoder {cfg.decoder}, device {tuner.device}, {tuner.world} process(es)")
    model_dir = tuner.run()
    if tuner.is_main:
        print(f"model: {model_dir} (smp.from_pretrained('{model_dir}')); "
              f"subset: {Path(cfg.out) / 'labeled_patches.json'}")
        print(f"next: mpinet evaluate {cfg.out} --dataset {cfg.dataset} --data-root {cfg.data_root}")
    return 0


def _print_metrics(result: dict) -> int:
    """The metrics table of an evaluate or probe result, and the files it wrote."""
    from .evaluate import format_metrics_table

    print(format_metrics_table(result))
    print(f"written: {Path(result['out']) / 'metrics.json'}, confusion.png, previews/"
          + (f"; model card updated with these results: {result['card']}" if result["card"] else ""))
    return 0


# --- probe
def add_probe_arguments(p: argparse.ArgumentParser) -> None:
    from .probe import ProbeConfig

    p.description = ("Frozen-feature linear probe: the backbone frozen, LEVELS upsampled to stride 4 and concatenated, "
                     "a normalised 1x1 classifier trained on the same seeded labeled subset as `finetune`, whole tiles "
                     "evaluated by sliding window -> RUN/metrics.json (evaluate's schema).")
    add_run_folder_arguments(p)
    add_settings_arguments(p, ProbeConfig, positional=("encoder",), skip=("device",))


def run_probe(args: argparse.Namespace) -> int:
    from .probe import ProbeConfig, Prober

    cfg = ProbeConfig(**settings_from_args(ProbeConfig, args))
    return _print_metrics(Prober(cfg, resume=args.resume, overwrite=args.overwrite).run())


# --- evaluate
def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a fine-tuning run folder (or its model/ folder, or any SMP save_pretrained folder)")
    p.add_argument("--dataset", required=True, choices=list(DATASETS), help="the data set to score on (the model's "
                   "classes must be its classes)")
    p.add_argument("--data-root", required=True, help=DATA_ROOT_HELP)
    p.add_argument("--split", help="default: test where it has labels (potsdam, folders with test/masks), else val "
                   "(loveda, uavid: their test has no labels)")
    p.add_argument("--protocol", choices=list(PROTOCOLS), help="default: the data set's (potsdam-mmseg, loveda, uavid)")
    p.add_argument("--bands", help="Potsdam's band product (default: those the model was trained on)")
    p.add_argument("--out", help="results folder (default RUN/eval-SPLIT)")
    p.add_argument("--previews", type=int, default=3, help="scenes drawn as image | truth | prediction PNGs")
    p.add_argument("--f1-from-precision-recall", action="store_true",
                   help="mmseg/GeoSeg parity: a class never predicted drops out of mF1 instead of counting 0")
    _inference_options(p)


def run_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    result = evaluate(args.model, args.dataset, args.data_root, split=args.split, protocol=args.protocol,
                      out=args.out, window=args.window, overlap=args.overlap, batch_size=args.batch_size,
                      previews=args.previews, device=args.device, precision=args.precision, bands=args.bands,
                      f1_from_precision_recall=args.f1_from_precision_recall)
    return _print_metrics(result)


# --- predict
def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a fine-tuning run folder (or its model/ folder)")
    p.add_argument("input", help="a GeoTIFF/PNG/JPEG, or a folder of them")
    p.add_argument("output", nargs="?", help="output file (.tif or .png) or, for a folder input, output folder "
                   "(default: RUN/predictions/INPUT_classes.tif, .png for non-georeferenced inputs; a folder "
                   "input's maps go to RUN/predictions/FOLDER/. Never beside the input, which may be a data set)")
    p.add_argument("--bands", help="1-based bands of the input to use, e.g. 1,2,3 (default: all)")
    p.add_argument("--preview", action="store_true", help="also write a colour PNG (OUTPUT.preview.png)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    _inference_options(p)


def run_predict(args: argparse.Namespace) -> int:
    from .inference import SlidingWindow
    from .model import load_segmentation_model
    from .predict import check_output, default_output, find_inputs, predict_raster

    src = Path(args.input)
    inputs = find_inputs(src)
    bands = [int(b) for b in args.bands.split(",")] if args.bands else None
    outputs = []
    model = Path(args.model)
    predictions = (model.parent if model.name == "model" else model) / "predictions"  # beside the run
    for path in inputs:  # every output checked before the model is loaded (that takes seconds)
        if src.is_dir():
            dst = default_output(path, Path(args.output) if args.output else predictions / src.name)
        else:
            dst = Path(args.output) if args.output else default_output(path, predictions)
        check_output(dst, args.overwrite)
        outputs.append(dst)
    model, info = load_segmentation_model(args.model)
    sw = SlidingWindow(model, info.mean, info.std, window=args.window, overlap=args.overlap,
                       batch_size=args.batch_size, device=resolve_device(args.device), precision=args.precision)
    for path, dst in zip(inputs, outputs):
        written = predict_raster(sw, info, path, dst, bands, args.preview, args.overwrite)
        preview = written.with_name(f"{written.stem}.preview.png")
        print(f"{path} -> {written}" + (f" (preview: {preview})" if args.preview else ""))
    return 0


# --- quickstart
def add_quickstart_arguments(p: argparse.ArgumentParser) -> None:
    from .quickstart import QuickstartSettings

    p.description = ("The whole pipeline on the embedded default (a synthetic Potsdam-format set): synth -> "
                     "pretrain -> export -> load through timm -> fine-tune on few labels -> evaluate. A few minutes "
                     "on a 2-core CPU.")
    add_settings_arguments(p, QuickstartSettings, skip=("device",))


def run_quickstart(args: argparse.Namespace) -> int:
    from .quickstart import QuickstartSettings, quickstart

    quickstart(QuickstartSettings(**settings_from_args(QuickstartSettings, args)))
    return 0


# --- study
def add_study_arguments(p: argparse.ArgumentParser) -> None:
    from .study import StudySettings

    p.description = ("Does pretraining pay on this data set, at this label budget? Pretrains each --methods once per "
                     "seed, probes and/or fine-tunes every encoder (and the controls random, random-bn) at every "
                     "label fraction per (seed, subset seed), and calls each pair by the 95% t interval of its mean "
                     "paired difference over seeds (better when the interval excludes 0; more seeds narrow it). "
                     "Scored on val; --split test only at the end "
                     "(the results then say test was read). Resumable: finished cells are reused, and a folder made "
                     "with other settings is refused. Writes OUT/results-SPLIT.md/.json and study-SPLIT-*.png "
                     "(SPLIT-bn with --reestimate-bn).")
    add_settings_arguments(p, StudySettings, skip=("device", "encoders"), sections={
        "dataset": "what is compared", "unlabeled": "pretraining cells", "label_patch": "probe and fine-tuning cells"})
    encoders = StudySettings.__dataclass_fields__["encoders"]
    p.add_argument("--encoders", nargs="*", metavar="NAME=SPEC", help=encoders.metadata["help"])


def run_study(args: argparse.Namespace) -> int:
    from .study import StudySettings, parse_encoders, run_study

    encoders = parse_encoders(args.encoders or [])
    settings = StudySettings(**settings_from_args(StudySettings, args) | {"encoders": encoders})
    run_study(settings)
    out, band = Path(args.out), settings.band
    print((out / f"results-{band}.md").read_text())
    print(f"written: {out / f'results-{band}.md'}, results-{band}.json, study-{band}-*.png")
    return 0
