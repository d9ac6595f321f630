#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks.md and the GPU evidence run, in one command on a CUDA machine.
#
#   bash bench/gpu_session.sh OUT [SECTION ...]   # OUT (default runs/gpu-session): log.txt and bundle.tgz
#
# Sections (default: all, in this order; seconds are their time limits):
#   evidence  500  real-imagery cells at GPU budget, pretraining and probe (issue 10; GPU utilisation sampled)
#   step      240  release step, ResNet-50 256 px batch 256: ours vs lightly's MoCo v2 and DenseCL
#   finetune  160  fine-tuning throughput, DeepLabV3+ ResNet-50 bf16
#   sliding   150  sliding-window inference on a 6000x6000 tile, GPU defaults vs one NCHW window
#   compile   200  torch.compile of ours mpinet at the release setting
#   r18        60  R18 128 px steps on in-memory views (against the real loader's rate in `evidence`)
#   memory    210  release memory by batch, bf16 and fp32 (measured 2026-11-26; rerun after model changes)
# A lent device allows about 10 minutes per command and 15 in all, start-up included: run
# `... OUT evidence` first, then `... OUT step finetune` if time is left.
# The bundle is rewritten after each section, so a session cut short keeps what finished. Needs the package's
# dependencies importable (pip install -e .); where the machine lacks some and a folder .whl/ holds their
# wheels, they are installed from it first.
set -u
OUT=$(mkdir -p "${1:-runs/gpu-session}" && cd "${1:-runs/gpu-session}" && pwd)
shift || true
SECTIONS=${*:-evidence step finetune sliding compile r18 memory}
STAGE=${STAGE:-/tmp/mpinet-gpu-stage}
mkdir -p "$STAGE"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
(cd /tmp && python3 -c "import mpinet_hub" 2>/dev/null) \
  || python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . \
  || export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
bundle() { cp docs/benchmarks.md "$STAGE/" 2>/dev/null; tar czf "$OUT/bundle.tgz" -C "$STAGE" . ; }
section() { echo; echo "=== $* ($(date +%T))"; }

section environment
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
python3 -c "import torch, timm, kornia, segmentation_models_pytorch as smp, lightly; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available())"
nproc

run_memory() {
  section "release memory: mpinet ResNet-50 256 px, peak by batch (bf16, then fp32)"
  timeout 120 python3 bench/bench_pretrain_memory.py --arch mpinet_resnet50 --crop 256 --batches 64 128 256 --negatives 4096 --precision bf16
  timeout 90 python3 bench/bench_pretrain_memory.py --arch mpinet_resnet50 --crop 256 --batches 64 128 256 --negatives 4096 --precision 32
  bundle
}

run_step() {
  section "release step: ResNet-50 256 px batch 256, ours vs lightly"
  (cd bench && timeout 240 python3 bench_pretrain_step.py --arch mpinet_resnet50 --batch 256 --crop 256 --steps 4 --warmup 2 \
    --variants bf16-cl bf16 32 --json "$STAGE/step_r50.json")
  bundle
}

run_evidence() {
  section "mpinet study on real imagery, GPU budget (real loader; GPU utilisation sampled)"
  [ -e runs/forest/classes.yaml ] || python3 bench/realdata.py "$HOME/.cache/mpinet-hub/realdata" runs/forest
  nvidia-smi dmon -s u -d 1 > "$STAGE/dmon_evidence.txt" 2>&1 &
  DMON=$!
  timeout 500 python3 -m mpinet_hub study --dataset folder --data-root runs/forest --out runs/study-forest-gpu \
    --metric IoU:tree --device cuda --workers 14 --seeds 0 --pretrain steps=800 batch_size=128 queue_size=1024
  kill $DMON
  mkdir -p "$STAGE/evidence-gpu"
  cp runs/study-forest-gpu/results-val.* "$STAGE/evidence-gpu/" 2>/dev/null || true
  (cd runs/study-forest-gpu && find . \( -name '*.jsonl' -o -name '*.json' -o -name '*.yaml' \) -print \
    | tar czf "$STAGE/evidence-gpu/cells.tgz" -T -)
  bundle
}

run_finetune() {
  section "fine-tuning throughput: DeepLabV3+ ResNet-50, 256 px crops, batch 16, bf16 (images/s from log.jsonl)"
  timeout 40 python3 -m mpinet_hub data synth potsdam /tmp/ft-potsdam --tiles 6 --size 1024 > /dev/null
  timeout 120 python3 -m mpinet_hub finetune --dataset potsdam --data-root /tmp/ft-potsdam --encoder random:mpinet_resnet50 \
    --label-fraction 1 --steps 60 --batch-size 16 --precision bf16 --workers 8 --device cuda --out /tmp/ft-r50 --overwrite
  python3 -c "import json,statistics; r=[json.loads(l)['images_per_s'] for l in open('/tmp/ft-r50/log.jsonl')][10:]; print('finetune images/s, median of steps 11-60:', round(statistics.median(r)))"
  cp /tmp/ft-r50/log.jsonl "$STAGE/finetune_r50_log.jsonl" 2>/dev/null
  bundle
}

run_sliding() {
  section "sliding-window inference: 6000x6000 tile, DeepLabV3+ ResNet-50 bf16, GPU defaults vs one NCHW window"
  timeout 150 python3 bench/bench_sliding_window.py --arch mpinet_resnet50 --precision bf16 --size 6000
  bundle
}

run_r18() {
  section "the same R18 128 px steps on in-memory views (against the real loader's images/s above)"
  (cd bench && timeout 60 python3 bench_pretrain_step.py --arch mpinet_resnet18 --batch 128 --crop 128 --steps 10 --warmup 3 \
    --variants bf16-cl --only "ours mocov2" "ours mpinet" --json "$STAGE/step_r18.json")
  bundle
}

run_compile() {
  section "torch.compile: ours mpinet ResNet-50 256 px batch 256"
  (cd bench && timeout 200 python3 bench_pretrain_step.py --arch mpinet_resnet50 --batch 256 --crop 256 --steps 4 --warmup 2 \
    --variants bf16-cl-compile --only "ours mpinet" --json "$STAGE/step_r50_compile.json")
  bundle
}

for name in $SECTIONS; do
  if declare -F "run_$name" > /dev/null; then "run_$name"; else echo "unknown section: $name"; fi
done
section done
