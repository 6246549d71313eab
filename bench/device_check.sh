#!/usr/bin/env bash
# Every GPU claim of the project in one bounded run, one JSON per part.
#
#   bench/device_check.sh [--smoke] [--out DIR] [--wheels DIR] [--only PART,PART...] [--dry-run]
#
# On the GPU machine (see bench/README.md, "The GPU check"): installs the wheels that
# `make device-wheels` put in .whl/ into a temporary folder (pip --no-index --no-deps --target),
# prints the GPU, then runs each bench under `timeout`, all of it inside 9 minutes:
#   train_clip_tiny, train_clip_vit_b_32  bench/train_clip.py, bf16: ours vs open_clip_train
#   train_simclr                          bench/train_simclr.py, ResNet-18 at 32 px, bf16: ours vs lightly
#   index_throughput                      bench/index_throughput.py --device cuda: job vs forward pass
#   faiss_kmeans                          bench/faiss_kmeans.py: IVF k-means on the GPU vs the CPU
#   service                               bench/service.py, encoder on the GPU: HTTP vs in-process, batching
# A part that fails or runs out of time records rc and the ends of its output; the rest go on.
# Each DIR/PART.json holds the part's status, its goals and the bench's own result; DIR is $OUT
# when that is set, else bench/results/device_check. --only reruns some parts (others' files stay);
# --dry-run prints each part's command line and runs nothing.
#
# --smoke: the same parts on the CPU at tiny sizes (under 3 minutes), so that the GPU run cannot
# fail on a typo; tests/bench/test_device_check.py runs it.
set -uo pipefail

SMOKE=0
OUTDIR="${OUT:-}"
WHEELS=
ONLY=
DRY=0
while (($#)); do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --out) OUTDIR="$2"; shift ;;
        --wheels) WHEELS="$2"; shift ;;
        --only) ONLY=",$2,"; shift ;;
        --dry-run) DRY=1 ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

PARTS=(train_clip_tiny train_clip_vit_b_32 train_simclr index_throughput faiss_kmeans service)
for name in ${ONLY//,/ }; do
    [[ " ${PARTS[*]} " == *" $name "* ]] || { echo "no part $name: ${PARTS[*]}" >&2; exit 2; }
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 1
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

# part NAME SECONDS COMMAND...: runs COMMAND under `timeout`, with the bench's results going to a
# folder of its own, then records it. A part may run for its SECONDS, or longer when the parts
# before it left time unused (up to the deadline less the later parts' SECONDS), never past the
# deadline. (PLAN=1: only note the SECONDS.)
PLAN=0
ORDER=()
declare -A BUDGET=()
part() {
    local name="$1" budget="$2" n later=0 after=0; shift 2
    [[ -z "$ONLY" || "$ONLY" == *",$name,"* ]] || return 0
    if ((PLAN)); then
        ORDER+=("$name")
        BUDGET[$name]=$((budget * SECONDS_ALL / DEFAULT_SECONDS))
        return 0
    fi
    if ((DRY)); then
        printf '%s:' "$name"; printf ' %q' "$@"; echo
        return 0
    fi
    rm -f "$OUTDIR/$name.json"
    for n in "${ORDER[@]}"; do
        ((after)) && later=$((later + BUDGET[$n]))
        [[ "$n" == "$name" ]] && after=1
    done
    local left=$((DEADLINE - $(date +%s)))
    budget=${BUDGET[$name]}
    local limit=$((left - later > budget ? left - later : budget))
    limit=$((limit < left ? limit : left))
    local results="$WORK/results/$name" rc=0 t0 t1
    mkdir -p "$results"
    echo
    echo "== $name (at most ${limit} s): $*"
    t0=$(date +%s.%N)
    if ((limit < 10)); then
        rc=125
        echo "no time left before the deadline" >"$WORK/$name.err"
        : >"$WORK/$name.out"
    else
        LOOKALIKE_BENCH_RESULTS="$results" timeout -k 10 "$limit" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
        rc=$?
    fi
    t1=$(date +%s.%N)
    cat "$WORK/$name.out"
    ((rc == 0)) || tail -n 15 "$WORK/$name.err"
    "$PYTHON" - "$name" "$rc" "$t0" "$t1" "$limit" "$results" "$WORK/$name" "$OUTDIR/$name.json" "$*" <<'EOF'
import json, sys
from pathlib import Path
name, rc, t0, t1, limit, results, logs, out, command = sys.argv[1:]
rc, seconds = int(rc), float(t1) - float(t0)
found = sorted(Path(results).glob("*.json"))
result = json.loads(found[0].read_text()) if found else None
if rc == 0 and result is not None:
    status = "ok"
elif rc in (124, 137):
    status = "timed_out"
elif rc == 125:
    status = "not_run"
else:
    status = "failed" if rc else "no_result"
record = {"part": name, "status": status, "rc": rc, "seconds": round(seconds, 1), "time_limit_s": int(limit),
          "command": command}
if status != "ok":
    for stream in ("stdout", "stderr"):
        record[f"{stream}_tail"] = Path(f"{logs}.{stream[3:]}").read_text(errors="replace").splitlines()[-15:]

def goal(value, op, target):
    met = None if value is None else (value <= target if op == "<=" else value >= target)
    return {"value": value, "goal": f"{op} {target}", "met": met}

if result is not None:
    goals = {}
    if name.startswith("train_clip"):
        batch, sps = result["args"]["batch_size"], result["seconds_per_step"]
        record["images_per_second"] = {k: batch / v for k, v in sps.items()}
        goals["seconds_per_step_ours_vs_open_clip_train"] = goal(result["ratio"], "<=", 1.0)
    elif name == "train_simclr":
        batch, sps = result["args"]["batch_size"], result["seconds_per_step"]
        record["images_per_second"] = {k: batch / v for k, v in sps.items()}
        goals["seconds_per_step_ours_vs_lightly"] = goal(result["ratio"], "<=", 1.0)
    elif name == "index_throughput":
        goals["job_vs_forward"] = goal(result["best_ratio"], ">=", 0.9)
    elif name == "faiss_kmeans":
        goals["gpu_vs_cpu_seconds"] = goal(result["ratio"], "<=", 1.0)
        if result["gpu_skipped"]:
            record["skipped"] = result["gpu_skipped"]
    elif name == "service":
        for kind in ("text", "image"):
            goals[f"{kind}_http_vs_inprocess_p50"] = goal(result["latency"][kind]["ratio_p50"], "<=", 1.15)
        goals[f"batching_gain_{result['throughput_rps']['clients']}_clients"] = goal(result["throughput_rps"]["ratio"], ">=", 2.0)
    record["goals"] = goals
    record["result"] = result
Path(out).write_text(json.dumps(record, indent=2) + "\n")
EOF
}

# The parts, with the sizes of the smoke run or of the GPU run.
parts() {
    if ((SMOKE)); then
        CLIP=(--device cpu --precision bf16 --batch-size 8 --workers 0 --warmup-steps 1 --mode interleaved --repeats 1)
        part train_clip_tiny 30 "$PYTHON" bench/train_clip.py --model lookalike-micro "${CLIP[@]}" --name r
        # ViT-B-32 takes seconds a step on these cores: the smoke run trains lookalike-micro in its place
        part train_clip_vit_b_32 30 "$PYTHON" bench/train_clip.py --model lookalike-micro "${CLIP[@]}" --name r
        part train_simclr 35 "$PYTHON" bench/train_simclr.py --data "$IMAGES" --backbone resnet18,small_stem=true \
            --image-size 32 --precision bf16 --batch-size 4 --steps 3 --warmup-steps 1 --workers 0 --name r
        part index_throughput 15 "$PYTHON" bench/index_throughput.py --device cpu --model lookalike-micro \
            --batch-size 8 --workers 0,1 --repeats 1 --name r
        part faiss_kmeans 10 "$PYTHON" bench/faiss_kmeans.py --vectors 4096 --dim 32 --nlist 16 --name r
        part service 30 "$PYTHON" bench/service.py --device cpu --model lookalike-micro --queries 6 --clients 4 \
            --requests-per-client 2 --name r
    else
        CLIP=(--device cuda --precision bf16 --batch-size 128 --workers 8)
        part train_clip_tiny 60 "$PYTHON" bench/train_clip.py --model lookalike-tiny "${CLIP[@]}" --name r
        part train_clip_vit_b_32 130 "$PYTHON" bench/train_clip.py --model ViT-B-32 "${CLIP[@]}" --name r
        part train_simclr 80 "$PYTHON" bench/train_simclr.py --data "$IMAGES" --backbone resnet18,small_stem=true \
            --image-size 32 --precision bf16 --batch-size 256 --steps 40 --workers 12 --threads 0 --name r
        part index_throughput 80 "$PYTHON" bench/index_throughput.py --device cuda --model ViT-B-32 \
            --batch-size 128 --workers 4,12 --repeats 2 --name r
        part faiss_kmeans 30 "$PYTHON" bench/faiss_kmeans.py --vectors 100000 --dim 256 --nlist 1024 --name r
        part service 110 "$PYTHON" bench/service.py --device cuda --model ViT-B-32 --queries 200 --clients 16 \
            --requests-per-client 20 --name r
    fi
}

if ((DRY)); then  # print the commands, run nothing
    WORK="${TMPDIR:-/tmp}/device_check" IMAGES="${TMPDIR:-/tmp}/device_check/datasets/emoji"
    parts
    exit 0
fi

OUTDIR="${OUTDIR:-bench/results/device_check}"
mkdir -p "$OUTDIR" && OUTDIR="$(cd "$OUTDIR" && pwd)"
WORK="$(mktemp -d)"
LOG="$OUTDIR/device_check.log"
exec > >(tee "$LOG") 2>&1
TEE=$!
# at the end: the scratch folder goes, and the log is complete before the command returns
trap 'rm -rf "$WORK"; exec >&- 2>&-; wait "$TEE"' EXIT

STARTED=$(date +%s)
# The whole run's time: 9 minutes on the GPU machine (a command there may take 10), 3 for the
# smoke run; DEVICE_CHECK_SECONDS stretches it, and each part's own limit with it (a test on a
# busy machine checks what runs, not how fast).
if ((SMOKE)); then DEFAULT_SECONDS=175; else DEFAULT_SECONDS=540; fi
SECONDS_ALL=${DEVICE_CHECK_SECONDS:-$DEFAULT_SECONDS}
DEADLINE=$((STARTED + SECONDS_ALL))
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
echo "device_check: $( ((SMOKE)) && echo smoke || echo full ) run, $(date -u +%FT%TZ), results in $OUTDIR"

# 1. The wheels the machine lacks: .whl/ on the GPU machine; the smoke run uses this machine's
#    packages unless --wheels names a folder (of wheels for this Python).
((SMOKE)) || WHEELS="${WHEELS:-.whl}"
if [[ -n "$WHEELS" ]] && compgen -G "$WHEELS/*.whl" >/dev/null; then
    SITE="$WORK/site"
    echo "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE"
    if ! timeout 120 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --disable-pip-version-check --target "$SITE" "$WHEELS"/*.whl; then
        echo "pip could not install the wheels" >&2
        exit 1
    fi
    export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "no wheels${WHEELS:+ in $WHEELS}: using $PYTHON's own packages"
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi

# 2. The machine.
if command -v nvidia-smi >/dev/null; then
    timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
fi
if ! "$PYTHON" - "$SMOKE" <<'EOF'
import os, sys, torch
cuda = torch.cuda.is_available()
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, {os.cpu_count()} CPUs")
print(f"GPU: {torch.cuda.get_device_name(0)}, capability {torch.cuda.get_device_capability(0)}, "
      f"bf16 {torch.cuda.is_bf16_supported()}" if cuda else "GPU: none visible to torch")
sys.exit(0 if cuda or sys.argv[1] == "1" else 1)
EOF
then
    echo "no CUDA device: this run is for the GPU machine (on a CPU: --smoke)" >&2
    exit 2
fi

# 3. The data: the repository's emoji sample (what travels with the tree), copied REPS times
#    under distinct paths so that the training epochs and the indexing job are long enough to
#    time; the smoke run takes 32 of the images once. LOOKALIKE_DATASETS points the benches at it.
if ((SMOKE)); then REPS=1; LIMIT=32; else REPS=10; LIMIT=0; fi
"$PYTHON" - "$WORK/datasets/emoji" "$REPS" "$LIMIT" <<'EOF'
import json, shutil, sys
from pathlib import Path
out, reps, limit = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
sample = Path("samples/emoji")
rows = [json.loads(line) for line in (sample / "metadata.jsonl").read_text().splitlines() if line.strip()]
if limit:
    rows = rows[:: max(1, len(rows) // limit)][:limit]
out.mkdir(parents=True)
with open(out / "metadata.jsonl", "w") as f:
    for r in range(reps):
        for row in rows:
            name = Path(f"rep{r}") / row["file"]
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sample / row["file"], out / name)
            f.write(json.dumps({**row, "file": str(name)}) + "\n")
print(f"data: {reps} x {len(rows)} emoji images in {out}")
EOF
export LOOKALIKE_DATASETS="$WORK/datasets"
IMAGES="$WORK/datasets/emoji"

# 4. The parts.
PLAN=1 && parts && PLAN=0
parts

# 5. Summary.
echo
"$PYTHON" - "$OUTDIR" "$(($(date +%s) - STARTED))" <<'EOF'
import json, sys
from pathlib import Path
out, total = Path(sys.argv[1]), sys.argv[2]
print(f"{'part':<22}{'status':<11}{'seconds':>8}  goals")
for path in sorted(out.glob("*.json")):
    r = json.loads(path.read_text())
    goals = "; ".join(f"{k} {g['value']:.3g} ({g['goal']}: {'met' if g['met'] else 'not met'})"
                      for k, g in r.get("goals", {}).items() if g["value"] is not None)
    print(f"{r['part']:<22}{r['status']:<11}{r['seconds']:>8.1f}  {goals or r.get('skipped', '')}")
print(f"total {total} s")
EOF
