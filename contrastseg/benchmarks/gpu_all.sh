#!/usr/bin/env bash
# Every measurement that needs a GPU, in one time-boxed go (about 9 minutes on one H100):
#   1. benchmarks.contrastive_loss at the paper's full shapes, with a kernel profile of our loss;
#   2. benchmarks.train_step at the paper's crops, float32 and bf16 autocast;
#   3. tests/test_cuda.py (CUDA autocast, sampler syncs, memory target, mixed-precision fits), in the background of 4;
#   4. benchmarks.camvid_comparison (contrastseg compare): 3 seeds x 2 arms trained at once, stopped at the time
#      left, scored at the last epoch every run validated and at equal training time per seed.
#   (and benchmarks.infonce_kernels: the fused Triton terms against the PyTorch ones, per term)
#   (and, with PARTS including table2, benchmarks.table2_losses: the Table 2 competitor terms against their
#   released code, at the paper's shapes)
# Usage: bash benchmarks/gpu_all.sh OUTDIR      (env: CONTRASTSEG_CAMVID, BUDGET_S=total seconds, *_ARGS to shrink,
#        PARTS: a subset of "loss losssplit kernels table2 step stepamp tests camvid", default all but table2)
set -u -o pipefail
out=${1:?usage: gpu_all.sh OUTDIR}
mkdir -p "$out"
t0=$SECONDS
budget=${BUDGET_S:-540}
root=${CONTRASTSEG_CAMVID:-data/camvid}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; nproc
  python3 -c "import torch, timm, lightning, torchmetrics, segmentation_models_pytorch as smp, albumentations as A
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'timm', timm.__version__, 'lightning',
      lightning.__version__, 'torchmetrics', torchmetrics.__version__, 'smp', smp.__version__, 'albumentations',
      A.__version__)"
  python3 -c "import triton; print('triton', triton.__version__)"; } 2>&1 | tee "$out/env.txt"

parts=${PARTS:-loss losssplit kernels step stepamp tests camvid}
has() { [[ " $parts " == *" $1 "* ]]; }
# Every part gets at most its own limit and never more than what is left of BUDGET_S; a part with under 20 s left
# is skipped (and says so), so the whole run ends within the budget.
left() { echo $((budget - (SECONDS - t0))); }
limit() { local rem; rem=$(left); (( rem < $1 )) && echo "$rem" || echo "$1"; }
run_part() {  # run_part NAME MAX_SECONDS COMMAND...
  local name=$1 max=$2; shift 2
  if (( $(left) < 20 )); then echo "== $name: skipped, BUDGET_S=$budget spent"; return; fi
  echo "== $name ($((SECONDS - t0)) s)"
  timeout "$(limit "$max")" "$@"
}
if has loss; then
  run_part "contrastive loss" 150 python3 -m benchmarks.contrastive_loss --profile ${LOSS_ARGS:-} 2>&1 | tee "$out/contrastive_loss.txt"
fi
if has losssplit; then
  run_part "contrastive loss, Triton kernels split" 150 python3 -m benchmarks.contrastive_loss --triton-split \
    --no-baseline --anchors ${LOSS_SPLIT_ARGS:-} 2>&1 | tee "$out/contrastive_loss_split.txt"
fi
if has kernels; then
  run_part "InfoNCE kernels" 90 python3 -m benchmarks.infonce_kernels ${KERNEL_ARGS:---split} 2>&1 | tee "$out/infonce_kernels.txt"
fi
if has table2; then
  run_part "Table 2 terms" 150 python3 -m benchmarks.table2_losses ${TABLE2_ARGS:-} 2>&1 | tee "$out/table2_losses.txt"
fi
if has step; then
  run_part "train step" 170 python3 -m benchmarks.train_step ${STEP_ARGS:-} 2>&1 | tee "$out/train_step.txt"
fi
if has stepamp; then
  run_part "train step, bf16" 60 python3 -m benchmarks.train_step --amp bf16 \
    ${STEP_AMP_ARGS:---families HRNetV2-W48 UPerNet-Swin-T} ${STEP_ARGS:-} 2>&1 | tee -a "$out/train_step.txt"
fi
if ! has camvid; then
  if has tests; then
    run_part "CUDA tests" "${TESTS_TIMEOUT:-240}" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py \
      ${PYTEST_ARGS:-} 2>&1 | tee "$out/test_cuda.txt" | tail -30
  fi
  echo "== done in $((SECONDS - t0)) s"
  exit 0
fi

if (( $(left) < 100 )); then echo "== CamVid comparison: skipped, BUDGET_S=$budget spent"; exit 0; fi
tests=
if has tests; then
  echo "== CUDA tests in the background ($((SECONDS - t0)) s)"
  timeout "$(limit "${TESTS_TIMEOUT:-300}")" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py \
    ${PYTEST_ARGS:-} > "$out/test_cuda.txt" 2>&1 &
  tests=$!
fi
echo "== CamVid comparison ($((SECONDS - t0)) s)"
# The runs stop at the deadline and take up to 60 s more to flush their logs and be scored.
deadline=$(( $(left) - 70 ))
camvid_out=runs/camvid_gpu/$(date +%Y%m%d-%H%M%S)  # a folder of its own: compare refuses one holding a comparison
python3 -m benchmarks.camvid_comparison --root "$root" --seeds 0 1 2 --parallel 6 --out "$camvid_out" \
  --deadline-min "$(python3 -c "print(max($deadline, 30) / 60)")" \
  -- --trainer.check_val_every_n_epoch=5 --data.init_args.num_workers=2 ${CAMVID_ARGS:-} 2>&1 | tee "$out/camvid.txt"
if [[ -n $tests ]]; then wait "$tests"; tail -5 "$out/test_cuda.txt"; fi
tar czf "$out/camvid_runs.tar.gz" "$camvid_out"/*.json "$camvid_out"/*.md "$camvid_out"/*.log \
  $(find "$camvid_out" -name metrics.csv -o -name config.yaml) 2>/dev/null
echo "== done in $((SECONDS - t0)) s"
