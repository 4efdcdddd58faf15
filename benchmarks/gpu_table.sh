#!/usr/bin/env bash
# The original's results table on one CUDA GPU: train the fast recipe of as many rows as fit in a
# budget (default 540 s, 9 minutes), largest gain first, and write each finished run's summary file
# (`torchcls results RUN --save`) for docs/results/.
#
# The plan (PLAN below, in order) is CIFAR-10 only (the data at hand; CIFAR-100 is not) and starts
# with the rows that had no measured cell when it was written, cheapest first, so that the budget
# fills as many empty cells as it can; ResNet-20 and ResNet-56, measured on CPUs, come last. A row's fast recipe is
# its own recipe where one exists (cifar10-alexnet-30ep, cifar10-resnet56-60ep), else its original
# recipe with the 60-epoch one-cycle schedule of cifar10-resnet56-60ep (which reached ResNet-56's row
# on a CPU: 93.06% against 92.88%) given as flags. None of these has run on a GPU: how long each
# takes there is measured first, by a short `torchcls bench` of the same recipe and flags, and a row
# runs only when that estimate (epochs x 50,000 images / measured images/s, plus 15% for evaluation
# and 20 s for start-up) fits in what is left of the budget; a row that does not fit is skipped and
# the next (cheaper ones may still fit). Each training runs under `timeout` of the budget left.
#
# Usage, from anywhere (it runs in the repository root):
#   benchmarks/gpu_table.sh             # on the GPU: OUT/plan.tsv, OUT/<row>.log, OUT/runs/<row>/,
#                                       # OUT/summaries/*.json, OUT/table.md, OUT/summary.tsv
#   benchmarks/gpu_table.sh --list      # the plan (order, row, recipe and flags), one line each; no GPU
#   benchmarks/gpu_table.sh --dry-run   # the commands it would run for each row; no GPU, nothing run
#
#   GPU_TABLE_QUICK=1 benchmarks/gpu_table.sh   # tests the script on a CPU: the first row only,
#                                       # 1 epoch on 256 images, one thread (figures mean nothing)
#
# Environment: OUT (default gpu_table_out), GPU_TABLE_BUDGET (seconds, default 540), TORCHCLS_DATA
# (default ../shared/data from the repository root, holding cifar-10-batches-py.tar.xz), PY (default
# .venv/bin/python, else python3; tools run as `$PY -m torchcls` with src/ on PYTHONPATH),
# GPU_TABLE_QUICK (1: the CPU test mode above).
#
# Exit status: 0 when every row that ran finished; 1 when one failed or timed out; 2 when there is no
# CUDA device (one line saying so; nothing is run) or on a bad setting.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || exit 2
cd "$ROOT" || exit 2

MODE=run
case "${1:-}" in
    "") ;;
    --list) MODE=list ;;
    --dry-run) MODE=dry ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_table: unknown argument '$1' (use --list, --dry-run or nothing)" >&2; exit 2 ;;
esac

OUT=${OUT:-gpu_table_out}
BUDGET=${GPU_TABLE_BUDGET:-540}
PY=${PY:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3 || echo python3)
export TORCHCLS_DATA=${TORCHCLS_DATA:-$ROOT/../shared/data}
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
# The 60-epoch one-cycle schedule of cifar10-resnet56-60ep, as flags over a row's original recipe
FAST="--epochs 60 --lr-schedule onecycle --warmup-epochs 2 --lr 0.2 --nesterov on --label-smoothing 0.1 --no-wd-norm-bias on --test-batch 1000"
# row | recipe | flags (after --recipe RECIPE) | epochs
PLAN=(
    "alexnet|cifar10-alexnet-30ep||30"
    "pnasnet|original/cifar10-pnasnet|$FAST|60"
    "shufflenetv2|original/cifar10-shufflenetv2|$FAST|60"
    "mobilenet|original/cifar10-mobilenet|$FAST|60"
    "mobilenetv2|original/cifar10-mobilenetv2|$FAST|60"
    "densenet-bc-100-12|original/cifar10-densenet-bc-100-12|$FAST|60"
    "resnet110|original/cifar10-resnet110|$FAST|60"
    "preresnet110|original/cifar10-preresnet110|$FAST|60"
    "vgg16|original/cifar10-vgg16|$FAST|60"
    "vgg19_bn|original/cifar10-vgg19_bn|$FAST|60"
    "resnet1202|original/cifar10-resnet1202|$FAST|60"
    "wrn28-10-drop|original/cifar10-wrn28-10-drop|$FAST|60"
    "resnext29-8x64d|original/cifar10-resnext29-8x64d|$FAST|60"
    "densenet-bc-190-40|original/cifar10-densenet-bc-190-40|$FAST|60"
    "resnext29-16x64d|original/cifar10-resnext29-16x64d|$FAST|60"
    "resnet20|cifar10-resnet20-60ep|--compile off|60"
    "resnet56|cifar10-resnet56-60ep|--compile off|60"
)

QUICK=${GPU_TABLE_QUICK:-0}
DEVICE=cuda TRAIN_EXTRA="" BENCH_EXTRA="--steps 20 --windows 3 --warmup 5" MAX_ROWS=${#PLAN[@]}
if [ "$QUICK" = 1 ]; then
    DEVICE=cpu MAX_ROWS=1
    TRAIN_EXTRA="--epochs 1 --train-subset 256 --test-subset 100 --threads 1"
    BENCH_EXTRA="--train-subset 256 --steps 2 --windows 1 --warmup 1 --threads 1"
fi
case "$BUDGET" in '' | *[!0-9]*)
    echo "gpu_table: GPU_TABLE_BUDGET must be a whole number of seconds, not '$BUDGET'" >&2
    exit 2
    ;;
esac


train_cmd() { # ROW RECIPE FLAGS: the training command of a row, one line
    echo "$PY -m torchcls train --recipe $2 $3 $TRAIN_EXTRA --data-dir $TORCHCLS_DATA -c $OUT/runs/$1 --device $DEVICE --tensorboard off"
}
bench_cmd() {
    echo "$PY -m torchcls bench --recipe $2 $3 $BENCH_EXTRA --data-dir $TORCHCLS_DATA --device $DEVICE --json"
}

if [ "$MODE" = list ]; then
    for entry in "${PLAN[@]}"; do
        IFS='|' read -r row recipe flags epochs <<<"$entry"
        echo "$row	$recipe	$flags	$epochs"
    done
    exit 0
fi
if [ "$MODE" = dry ]; then
    for entry in "${PLAN[@]}"; do
        IFS='|' read -r row recipe flags epochs <<<"$entry"
        echo "# $row: bench, then train if $epochs epochs fit in the budget left"
        bench_cmd "$row" "$recipe" "$flags"
        train_cmd "$row" "$recipe" "$flags"
        echo "$PY -m torchcls results $OUT/runs/$row --save $OUT/summaries --summaries none --format terminal"
    done
    exit 0
fi

# ----------------------------------------------------------------------------- a GPU, or one line

PROBE=$(timeout -k 5 90 "$PY" -c 'import torch; ok = torch.cuda.is_available(); print("cuda=" + str(int(ok)) + ";" + (torch.cuda.get_device_name(0) if ok else "torch " + torch.__version__))' 2>&1 | tail -1)
case "$PROBE" in
    cuda=1\;*) GPU=${PROBE#cuda=1;} ;;
    *) if [ "$QUICK" = 1 ]; then GPU="no GPU: quick CPU test (GPU_TABLE_QUICK=1)"; else
        echo "gpu_table: no CUDA device (${PROBE#cuda=0;}: torch.cuda.is_available() is False); nothing was run"
        exit 2
    fi ;;
esac

mkdir -p "$OUT/runs" "$OUT/summaries" || { echo "gpu_table: cannot create OUT=$OUT" >&2; exit 2; }
T0=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - T0))); }
echo "[gpu_table] $GPU; budget $BUDGET s; output in $OUT"
printf 'row\trecipe\tflags\tepochs\tbench_images_per_s\testimate_s\tstatus\twall_s\n' >"$OUT/summary.tsv"
cp /dev/null "$OUT/plan.tsv"
FAILED=0
for entry in "${PLAN[@]:0:$MAX_ROWS}"; do
    IFS='|' read -r row recipe flags epochs <<<"$entry"
    [ "$QUICK" != 1 ] || epochs=1
    printf '%s\t%s\t%s\t%s\n' "$row" "$recipe" "$flags" "$epochs" >>"$OUT/plan.tsv"
    log="$OUT/$row.log"
    if [ "$(left)" -lt 60 ]; then
        printf '%s\t%s\t%s\t%s\t\t\tskipped: under 60 s left\t0\n' "$row" "$recipe" "$flags" "$epochs" >>"$OUT/summary.tsv"
        continue
    fi
    # shellcheck disable=SC2046  # the commands are word-split on purpose (no spaces in their parts)
    ips=$(timeout -k 5 60 $(bench_cmd "$row" "$recipe" "$flags") 2>"$log.bench" |
        "$PY" -c 'import json, sys; t = sys.stdin.read(); print(round(json.loads(t[t.index("{"):])["ours"]["images_per_s"]))' 2>>"$log.bench")
    if [ -z "$ips" ] || [ "$ips" -le 0 ] 2>/dev/null; then
        printf '%s\t%s\t%s\t%s\t\t\tFAILED: bench (see %s.bench)\t0\n' "$row" "$recipe" "$flags" "$epochs" "$row.log" >>"$OUT/summary.tsv"
        FAILED=1
        continue
    fi
    est=$(awk -v e="$epochs" -v r="$ips" 'BEGIN { printf "%d", e * 50000 / r * 1.15 + 20 }')
    if [ "$est" -gt "$(($(left) - 10))" ]; then
        echo "[gpu_table] $row: skipped, estimate $est s > $(left) s left ($ips images/s)"
        printf '%s\t%s\t%s\t%s\t%s\t%s\tskipped: does not fit\t0\n' "$row" "$recipe" "$flags" "$epochs" "$ips" "$est" >>"$OUT/summary.tsv"
        continue
    fi
    echo "[gpu_table] $row: $ips images/s, estimate $est s; training"
    t=$(date +%s)
    rm -rf "$OUT/runs/$row"
    # shellcheck disable=SC2046
    timeout -k 10 "$(($(left) - 5))" $(train_cmd "$row" "$recipe" "$flags") >"$log" 2>&1 </dev/null
    rc=$?
    wall=$(($(date +%s) - t))
    if [ "$rc" -eq 0 ]; then
        "$PY" -m torchcls results "$OUT/runs/$row" --save "$OUT/summaries" --summaries none --format terminal >>"$log" 2>&1
        status=ok
    else
        status="FAILED: exit $rc"
        FAILED=1
    fi
    find "$OUT/runs/$row" -name '*.pth.tar' -type f -delete 2>/dev/null
    echo "[gpu_table] $row: $status after $wall s"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$row" "$recipe" "$flags" "$epochs" "$ips" "$est" "$status" "$wall" >>"$OUT/summary.tsv"
done
if compgen -G "$OUT/summaries/*.json" >/dev/null; then
    "$PY" -m torchcls results --summaries "$OUT/summaries" --format markdown >"$OUT/table.md" 2>&1
fi
column -t -s "$(printf '\t')" "$OUT/summary.tsv" 2>/dev/null || cat "$OUT/summary.tsv"
exit "$FAILED"
