#!/usr/bin/env bash
# The one-GPU check, prepared to run unattended, once, in under 8 minutes on one GPU (an H200):
#
#   cuda_tests  pytest tests/test_cuda.py: the fp16 GradScaler path, `torchrun --nproc_per_node 1`
#               with --sync-bn and NCCL, an NCCL all_reduce with SyncBatchNorm under DDP
#   bench       torchcls bench -a resnet20 --dataset cifar10 --train-batch 512 --vs-reference
#   main        the main job: torchcls train (the main recipe, SpeedNet-mini on Fashion-MNIST)
#   speednet    torchcls train --recipe cifar10-speednet (one seed: the recipe's seed 0)
#
# Usage, from anywhere (it runs in the repository root):
#   benchmarks/gpu_check.sh                                    # the real check, on the GPU
#   OUT=/tmp/gc GPU_CHECK_QUICK=1 GPU_CHECK_DEVICE=cpu benchmarks/gpu_check.sh   # tiny, CPU: tests it
#
# Environment:
#   OUT                  output folder (default gpu_check_out): one log per part (<part>.log), the
#                        run folders main_run/ and speednet_run/ (results.json, log.txt, metrics.jsonl;
#                        their checkpoints are deleted at the end unless GPU_CHECK_KEEP_CHECKPOINTS=1),
#                        nvidia-smi.txt (its full output, when there is one),
#                        summary.md (machine, and per part: command, exit status, wall seconds, key
#                        figures), parts.tsv (the same table, tab-separated); summary.md is rewritten
#                        after every part, so a run killed from outside still leaves one
#   TORCHCLS_DATA        data folder (default ../shared/data from the repository root): CIFAR-10 as
#                        cifar-10-batches-py.tar.xz (or unpacked); Fashion-MNIST is looked for there
#                        (also in fashion-mnist/ and FashionMNIST/raw/) and in the system folder
#   GPU_CHECK_QUICK=1    tiny sizes (a few steps, 1 epoch on 256-512 images) to test the script itself
#   GPU_CHECK_DEVICE     auto (default: cuda when there is one) | cuda | cpu; the CUDA-only part
#                        (cuda_tests) is reported as skipped on cpu
#   GPU_CHECK_BUDGET     seconds for the whole check (default 470); each part's timeout is cut to
#                        what is left of it, and a part with under 15 s left is not run (a failure)
#   GPU_CHECK_TIMEOUT_<PART>  a part's own timeout in seconds (CUDA_TESTS 100, BENCH 70, MAIN 145,
#                        SPEEDNET 145: in all 460 s, under the budget)
#   PY                   the Python (default .venv/bin/python, else python3); every tool is run as
#                        `$PY -m ...` with src/ on PYTHONPATH, so a copied tree needs no reinstall
#   FMNIST_SYSTEM_DIR    the system Fashion-MNIST folder (default /usr/share/datasets/fashion-mnist)
#
# Exit status: 0 when every part that ran passed (parts skipped for want of data or of a GPU do not
# count as failures), 1 when one failed or timed out, 2 when there is no CUDA device and
# GPU_CHECK_QUICK is not 1 (one line "no CUDA device: ..." instead of 20 minutes on a CPU), or on a
# bad setting.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || exit 2
cd "$ROOT" || exit 2

OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT" || { echo "gpu_check: cannot create OUT=$OUT" >&2; exit 2; }
OUT=$(cd "$OUT" && pwd)
QUICK=${GPU_CHECK_QUICK:-0}
DEVICE_ASKED=${GPU_CHECK_DEVICE:-auto}
BUDGET=${GPU_CHECK_BUDGET:-470}
FMNIST_SYSTEM_DIR=${FMNIST_SYSTEM_DIR:-/usr/share/datasets/fashion-mnist}
PY=${PY:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3 || echo python3)
export TORCHCLS_DATA=${TORCHCLS_DATA:-$ROOT/../shared/data}
if [ -d "$TORCHCLS_DATA" ]; then TORCHCLS_DATA=$(cd "$TORCHCLS_DATA" && pwd); fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg

case "$DEVICE_ASKED" in auto | cuda | cpu) ;; *)
    echo "gpu_check: GPU_CHECK_DEVICE must be auto, cuda or cpu, not '$DEVICE_ASKED'" >&2
    exit 2
    ;;
esac
case "$BUDGET" in '' | *[!0-9]*)
    echo "gpu_check: GPU_CHECK_BUDGET must be a whole number of seconds, not '$BUDGET'" >&2
    exit 2
    ;;
esac

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
T_START=$(now)
budget_left() { awk -v a="$T_START" -v b="$(now)" -v t="$BUDGET" 'BEGIN { printf "%d", t - (b - a) }'; }
say() { echo "[gpu_check] $*"; }

# ----------------------------------------------------------------------------- the machine

DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
CPU=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
[ -n "$CPU" ] || CPU=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo 2>/dev/null | head -1)
CPU="${CPU:-unknown} ($(nproc 2>/dev/null || echo '?') CPUs)"
if command -v nvidia-smi >/dev/null 2>&1; then
    SMI=$(timeout -k 5 30 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 |
        paste -sd ';' -)
    [ -n "$SMI" ] || SMI="nvidia-smi printed nothing"
    timeout -k 5 30 nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
else
    SMI="nvidia-smi not found"
fi
COMMIT=$(timeout 10 git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "unknown (no git)")
if [ "$COMMIT" != "unknown (no git)" ] && [ -n "$(timeout 10 git -C "$ROOT" status --porcelain 2>/dev/null | head -1)" ]; then
    COMMIT="$COMMIT, with uncommitted changes"
fi

PROBE=$(timeout -k 5 90 "$PY" - 2>&1 <<'EOF'
import platform

import torch

print("torch=" + torch.__version__)
print("torch_cuda=" + str(torch.version.cuda))
print("python=" + platform.python_version())
ok = torch.cuda.is_available()
print("cuda=" + ("1" if ok else "0"))
if ok:
    p = torch.cuda.get_device_properties(0)
    print("gpu_name=" + torch.cuda.get_device_name(0))
    print(f"gpu_info=capability {p.major}.{p.minor}, {p.total_memory / 2**30:.1f} GiB, "
          f"bf16 {torch.cuda.is_bf16_supported()}, {torch.cuda.device_count()} visible")
    try:
        v = torch.cuda.nccl.version()
        print("nccl=" + (".".join(map(str, v)) if isinstance(v, tuple) else str(v)))
    except Exception as e:
        print(f"nccl=unavailable ({type(e).__name__})")
    print("cudnn=" + str(torch.backends.cudnn.version()))
else:
    try:
        torch.cuda.init()
    except Exception as e:
        print("cuda_error=" + (str(e).strip().splitlines() or [type(e).__name__])[0][:300])
EOF
)
probe() { sed -n "s/^$1=//p" <<<"$PROBE" | head -1; }
TORCH=$(probe torch)
CUDA_OK=$(probe cuda)
if [ -z "$TORCH" ]; then
    TORCH="unknown: \`$PY\` could not import torch ($(tail -1 <<<"$PROBE"))"
    CUDA_OK=0
fi
GPU_NAME=$(probe gpu_name)
TORCH_LINE="$TORCH (built for CUDA $(probe torch_cuda); Python $(probe python))"
if [ "$CUDA_OK" = 1 ]; then
    TORCH_LINE="$TORCH_LINE; cuDNN $(probe cudnn), NCCL $(probe nccl)"
    GPU_LINE="$GPU_NAME ($(probe gpu_info))"
else
    CUDA_ERR=$(probe cuda_error)
    CUDA_WHY="torch.cuda.is_available() is False${CUDA_ERR:+ ($CUDA_ERR)}"
    GPU_LINE="none: $CUDA_WHY"
fi
DEVICE=$DEVICE_ASKED
if [ "$DEVICE" = auto ]; then
    if [ "$CUDA_OK" = 1 ]; then DEVICE=cuda; else DEVICE=cpu; fi
fi
if [ "$QUICK" = 1 ]; then MODE="quick (GPU_CHECK_QUICK=1: tiny sizes, figures mean nothing)"; else MODE="full"; fi

# ----------------------------------------------------------------------------- the record

P_NAME=() P_STATUS=() P_RC=() P_WALL=() P_FIG=() P_CMD=() P_LIMIT=() P_KEY=()
FAILED=()
REFUSED=""
INTERRUPTED=""

md_cell() { tr '\n|' ' /' <<<"$1" | sed 's/[[:space:]]*$//'; }

summary_parts() {
    local i
    echo "| part | status | exit | wall s | figures |"
    echo "| --- | --- | --- | --- | --- |"
    for i in "${!P_NAME[@]}"; do
        echo "| ${P_NAME[$i]} | $(md_cell "${P_STATUS[$i]}") | ${P_RC[$i]} | ${P_WALL[$i]} | $(md_cell "${P_FIG[$i]}") |"
    done
    echo
    echo "## Commands (run in the repository root; each log is OUT/<part>.log)"
    echo
    for i in "${!P_NAME[@]}"; do
        echo "- ${P_NAME[$i]} (timeout ${P_LIMIT[$i]} s): \`${P_CMD[$i]}\`"
    done
    for i in "${!P_NAME[@]}"; do
        if [ -n "${P_KEY[$i]}" ]; then
            echo
            echo "## ${P_NAME[$i]}: key lines of its output"
            echo
            echo '```'
            echo "${P_KEY[$i]}"
            echo '```'
        fi
    done
}

write_summary() {
    local f="$OUT/summary.md" i result
    if [ -n "$REFUSED" ]; then
        result="**not run**: $REFUSED"
    elif [ ${#FAILED[@]} -gt 0 ]; then
        result="**${#FAILED[@]} part(s) failed**: $(IFS=,; echo "${FAILED[*]}" | sed "s/,/, /g")"
    else
        result="every part that ran passed (${#P_NAME[@]} parts so far)"
    fi
    [ -z "$INTERRUPTED" ] || result="$result; **interrupted by $INTERRUPTED**: the parts after the last one listed did not run"
    {
        echo "# GPU check, $DATE"
        echo
        echo "- mode: $MODE; device: $DEVICE"
        echo "- GPU (nvidia-smi: name, memory.total, driver_version): $SMI"
        echo "- GPU (torch.cuda.get_device_name): $GPU_LINE"
        echo "- torch: $TORCH_LINE"
        echo "- CPU (lscpu): $CPU"
        echo "- torchcls commit: $COMMIT"
        echo "- data: TORCHCLS_DATA=$TORCHCLS_DATA"
        echo "- time: $(since "$T_START") s so far, of a $BUDGET s budget"
        echo "- result: $result"
        echo
        [ ${#P_NAME[@]} -eq 0 ] || summary_parts
    } >"$f.tmp" && mv -f "$f.tmp" "$f"
    {
        printf 'part\tstatus\texit\twall_s\tfigures\n'
        for i in "${!P_NAME[@]}"; do
            printf '%s\t%s\t%s\t%s\t%s\n' "${P_NAME[$i]}" "$(md_cell "${P_STATUS[$i]}")" "${P_RC[$i]}" \
                "${P_WALL[$i]}" "$(md_cell "${P_FIG[$i]}")"
        done
    } >"$OUT/parts.tsv"
}

# record NAME STATUS RC WALL FIGURES COMMAND LIMIT KEYLINES
record() {
    P_NAME+=("$1") P_STATUS+=("$2") P_RC+=("$3") P_WALL+=("$4") P_FIG+=("$5") P_CMD+=("$6") P_LIMIT+=("$7")
    P_KEY+=("$8")
    write_summary
    say "$1: $2 (exit $3, $4 s)${5:+; $5}"
}

show_cmd() {
    local s
    s=$(printf '%q ' "$@")
    s=${s% }
    echo "${s//"$ROOT/"/}"
}

# A signal (the caller's own time limit): stop the running part (timeout passes the signal on to
# its command), record it as interrupted, write the summary, exit 128 + the signal's number.
CHILD="" CUR_NAME="" CUR_CMD="" CUR_T0="" CUR_LIMIT="" CUR_LOG=""
on_signal() {
    trap '' TERM INT
    if [ -n "$CHILD" ]; then
        kill -TERM "$CHILD" 2>/dev/null
        wait "$CHILD" 2>/dev/null
        echo "# interrupted by SIG$1 after $(since "$CUR_T0") s" >>"$CUR_LOG"
        FAILED+=("$CUR_NAME")
        CHILD=""
        record "$CUR_NAME" "FAILED: interrupted by SIG$1" "$((128 + $2))" "$(since "$CUR_T0")" "" "$CUR_CMD" \
            "$CUR_LIMIT" "... last lines of $CUR_NAME.log:
$(tail -n 15 "$CUR_LOG")"
    fi
    INTERRUPTED="SIG$1"
    write_summary
    say "interrupted by SIG$1; summary in $OUT/summary.md"
    exit $((128 + $2))
}
trap 'on_signal TERM 15' TERM
trap 'on_signal INT 2' INT

# skip_part NAME REASON COMMAND...
skip_part() {
    local name=$1 reason=$2
    shift 2
    record "$name" "skipped: $reason" "-" "0" "" "$(show_cmd "$@")" "-" ""
}

# run_part NAME TIMEOUT FIGURES_FUNCTION COMMAND...: run COMMAND under `timeout` (cut to the budget
# left), its stdout and stderr into OUT/NAME.log; FIGURES_FUNCTION LOG prints the figures on its
# first line and the key lines of the output after it.
run_part() {
    local name=$1 limit=$2 figures=$3
    shift 3
    local cmd left log="$OUT/$name.log" t0 rc wall status fig key
    cmd=$(show_cmd "$@")
    left=$(budget_left)
    if [ "$left" -lt 15 ]; then
        FAILED+=("$name")
        record "$name" "FAILED: not run, the ${BUDGET} s budget is spent" "-" "0" "" "$cmd" "$limit" ""
        return
    fi
    [ "$limit" -le $((left - 5)) ] || limit=$((left - 5))
    say "$name: running (timeout $limit s): $cmd"
    {
        echo "\$ $cmd"
        echo "# timeout $limit s; started $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    } >"$log"
    t0=$(now)
    # in the background, so that a signal to this script is handled at once (on_signal), not after it
    timeout -k 10 "$limit" "$@" >>"$log" 2>&1 </dev/null &
    CHILD=$! CUR_NAME=$name CUR_CMD=$cmd CUR_T0=$t0 CUR_LIMIT=$limit CUR_LOG=$log
    wait "$CHILD"
    rc=$?
    CHILD=""
    wall=$(since "$t0")
    echo "# exit status $rc after $wall s" >>"$log"
    case $rc in
        0) status=ok ;;
        124 | 137) status="FAILED: timed out after $limit s" ;;
        *) status="FAILED: exit status $rc" ;;
    esac
    key=$("$figures" "$log" 2>&1)
    fig=$(head -1 <<<"$key")
    key=$(tail -n +2 <<<"$key")
    if [ "$rc" -ne 0 ]; then
        FAILED+=("$name")
        key="${key:+$key
}... last lines of $name.log:
$(tail -n 15 "$log")"
    fi
    record "$name" "$status" "$rc" "$wall" "$fig" "$cmd" "$limit" "$key"
}

part_timeout() { # PART DEFAULT: $GPU_CHECK_TIMEOUT_<PART> or DEFAULT
    local var="GPU_CHECK_TIMEOUT_$1" v
    v=${!var:-$2}
    case "$v" in '' | *[!0-9]*) v=$2 ;; esac
    echo "$v"
}

# ----------------------------------------------------------------------------- figures

fig_pytest() {
    local line
    line=$(grep -E '[0-9]+ (passed|failed|skipped|errors?|deselected)' "$1" | grep -v '^#' | tail -1 |
        sed 's/=//g; s/^[[:space:]]*//; s/[[:space:]]*$//')
    echo "${line:-no pytest summary line}"
    grep -E '^(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS) |^tests/test_cuda.py::' "$1" | head -20
    [ -z "$line" ] || echo "$line"
}

fig_bench() {
    local ratio ours ref mem
    ratio=$(sed -n 's/^ratio ours\/reference:[[:space:]]*//p' "$1" | tail -1)
    ours=$(sed -n 's/^ours:[[:space:]]*\([0-9.]* images\/s\).*/\1/p' "$1" | tail -1)
    mem=$(sed -n 's/^ours:[[:space:]]*[0-9.]* images\/s.*peak memory \([0-9.]* MB\).*/\1/p' "$1" | tail -1)
    ref=$(sed -n 's/^reference:[[:space:]]*\([0-9.]* images\/s\).*/\1/p' "$1" | tail -1)
    if [ -n "$ratio" ]; then
        echo "ratio ours/reference $ratio; ours ${ours:-?} (peak ${mem:-?}), reference ${ref:-?}"
    else
        echo "no ratio line"
    fi
    grep -E '^(torchcls bench:|machine:|ours:|reference:|ratio ours/reference:)' "$1"
}

# fig_train RUN_DIR LOG: figures from RUN_DIR/results.json, the key lines from LOG
fig_train() {
    local results="$1/results.json"
    if [ -f "$results" ]; then
        "$PY" - "$results" <<'EOF' || echo "results.json unreadable"
import json
import sys

r = json.load(open(sys.argv[1]))
f, b, hw = r.get("final") or {}, r.get("best") or {}, r.get("hardware") or {}


def num(v, fmt):
    return format(v, fmt) if isinstance(v, (int, float)) else "?"


where = hw.get("device", "?") + (f" ({hw['gpu']})" if hw.get("gpu") else "")
print(f"final {f.get('set', 'test')} top-1 {num(f.get('top1'), '.2f')}% (best {num(b.get('top1'), '.2f')}%), "
      f"wall {num(r.get('wall_time_s'), '.1f')} s, {num(r.get('train_images_per_s'), '.0f')} train images/s, "
      f"{r.get('epochs', '?')} epochs, seed {r.get('seed', '?')}, {r.get('arch', '?')} on {r.get('dataset', '?')}, "
      f"{where}")
EOF
    else
        echo "no results.json"
    fi
    grep -E '^(torchcls: training|torchcls: done|epoch [0-9]+/[0-9]+  lr)' "$2" | tail -4
}
fig_main() { fig_train "$OUT/main_run" "$1"; }
fig_speednet() { fig_train "$OUT/speednet_run" "$1"; }

# ----------------------------------------------------------------------------- data

FMNIST_FOUND=""
find_fmnist() { # the first folder holding the four idx files (plain or .gz), in the loader's search order
    local stem d ok
    for d in "$TORCHCLS_DATA" "$TORCHCLS_DATA/fashion-mnist" "$TORCHCLS_DATA/FashionMNIST/raw" "$FMNIST_SYSTEM_DIR"; do
        ok=1
        for stem in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
            [ -f "$d/$stem" ] || [ -f "$d/$stem.gz" ] || ok=0
        done
        if [ "$ok" = 1 ]; then
            FMNIST_FOUND=$d
            return 0
        fi
    done
    return 1
}
have_cifar() {
    local d=$TORCHCLS_DATA f
    [ -d "$d/cifar-10-batches-py" ] && return 0
    for f in "$d"/cifar-10-batches-py.t* "$d"/cifar-10-python.t*; do
        [ -f "$f" ] && return 0
    done
    return 1
}

# ----------------------------------------------------------------------------- no GPU: say so

if [ "$CUDA_OK" != 1 ] && { [ "$QUICK" != 1 ] || [ "$DEVICE" = cuda ]; }; then
    REFUSED="no CUDA device: $CUDA_WHY; torch $TORCH_LINE; nvidia-smi: $SMI. Nothing was run (the full check on a CPU would take far longer than its 8 minutes); GPU_CHECK_QUICK=1 GPU_CHECK_DEVICE=cpu runs its tiny CPU version"
    write_summary
    echo "$REFUSED"
    exit 2
fi

say "mode $MODE, device $DEVICE; GPU: $GPU_LINE; torch $TORCH; output in $OUT"

# ----------------------------------------------------------------------------- the parts

if [ "$QUICK" = 1 ]; then
    BENCH_SIZE=(--train-batch 64 --train-subset 512 --steps 2 --windows 1 --warmup 1 -j 1 --threads 1)
    MAIN_SIZE=(--epochs 1 --train-subset 512 --test-subset 256 --threads 1)
    SPEEDNET_SIZE=(--epochs 1 --warmup-epochs 0.5 --train-subset 256 --test-subset 128 --train-batch 128 --threads 1)
else
    BENCH_SIZE=(--train-batch 512)
    MAIN_SIZE=()
    SPEEDNET_SIZE=()
fi

CUDA_TESTS=("$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py)
if [ "$DEVICE" = cuda ]; then
    run_part cuda_tests "$(part_timeout CUDA_TESTS 100)" fig_pytest "${CUDA_TESTS[@]}"
else
    skip_part cuda_tests "CUDA-only part (device $DEVICE)" "${CUDA_TESTS[@]}"
fi

BENCH=("$PY" -m torchcls bench -a resnet20 --dataset cifar10 --data-dir "$TORCHCLS_DATA" --vs-reference
    --device "$DEVICE" "${BENCH_SIZE[@]}")
if have_cifar; then
    run_part bench "$(part_timeout BENCH 70)" fig_bench "${BENCH[@]}"
else
    skip_part bench "no CIFAR-10 in $TORCHCLS_DATA" "${BENCH[@]}"
fi

if find_fmnist; then
    rm -rf "$OUT/main_run"
    MAIN=("$PY" -m torchcls train --data-dir "$FMNIST_FOUND" -c "$OUT/main_run" --device "$DEVICE"
        --tensorboard off "${MAIN_SIZE[@]}")
    run_part main "$(part_timeout MAIN 145)" fig_main "${MAIN[@]}"
else
    MAIN=("$PY" -m torchcls train -c "$OUT/main_run" --device "$DEVICE" --tensorboard off "${MAIN_SIZE[@]}")
    skip_part main "no Fashion-MNIST (in $TORCHCLS_DATA, its fashion-mnist/ or FashionMNIST/raw/, or $FMNIST_SYSTEM_DIR)" \
        "${MAIN[@]}"
fi

SPEEDNET=("$PY" -m torchcls train --recipe cifar10-speednet --data-dir "$TORCHCLS_DATA" -c "$OUT/speednet_run"
    --device "$DEVICE" --tensorboard off "${SPEEDNET_SIZE[@]}")
if have_cifar; then
    rm -rf "$OUT/speednet_run"
    run_part speednet "$(part_timeout SPEEDNET 145)" fig_speednet "${SPEEDNET[@]}"
else
    skip_part speednet "no CIFAR-10 in $TORCHCLS_DATA" "${SPEEDNET[@]}"
fi

# ----------------------------------------------------------------------------- the end

if [ "${GPU_CHECK_KEEP_CHECKPOINTS:-0}" != 1 ]; then
    find "$OUT" -name '*.pth.tar' -type f -delete 2>/dev/null
fi
write_summary
echo
cat "$OUT/summary.md"
if [ ${#FAILED[@]} -gt 0 ]; then
    exit 1
fi
exit 0
