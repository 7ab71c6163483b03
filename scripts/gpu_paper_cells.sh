#!/usr/bin/env bash
# Paper-protocol ranking cells on a GPU (RESULTS.md part 5), time-boxed and resumable across
# machines. Meant for the device machine (docs/EXPERIMENTS.md, "Paper-protocol cells on a GPU"):
#
#   bash scripts/gpu_paper_cells.sh [CONFIG] [BUDGET_S] [WORKERS]
#
# CONFIG    sweep configuration (default configs/study/paper_cells.json)
# BUDGET_S  wall-clock budget of the sweep in seconds (default 420); at the limit the sweep is
#           interrupted and every unfinished run keeps its last checkpoint (one per evaluation)
# WORKERS   parallel runs on the one GPU (default 5: at most 5 unfinished checkpoints come back)
#
# It needs no network: the package runs from src/ (PYTHONPATH) on the machine's torch, and
# MNIST comes from $NEWTON_LOSSES_CACHE (default .devcache/ in the checkout; copy
# ~/.cache/newton_losses/mnist/mnist_uint8.npz to .devcache/mnist/ and carry `.devcache`).
# Writes into $OUT (default /tmp/paper_cells_out): runs.tar.gz (every run's config.json,
# metrics.jsonl, result.json / failed.json: unpack it in the checkout), ckpt-RUN_ID.pt (the
# checkpoints of at most MAX_CKPT=5 unfinished runs: copy each to OUTDIR/RUN_ID/checkpoint.pt
# and carry those paths to resume), report.md (the report table), status.txt and env.txt.
# Without a GPU it refuses to start unless ALLOW_CPU=1 (tests run it on a tiny config).
set -uo pipefail

CONFIG=${1:-configs/study/paper_cells.json}
BUDGET=${2:-420}
WORKERS=${3:-5}
DEST=${OUT:-/tmp/paper_cells_out}
mkdir -p "$DEST"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export NEWTON_LOSSES_CACHE="${NEWTON_LOSSES_CACHE:-$PWD/.devcache}"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

"$PY" - "$CONFIG" > "$DEST/env.txt" <<'EOF' || { cat "$DEST/env.txt"; exit 2; }
import json, os, sys
import torch
print("torch", torch.__version__, "| cuda:", torch.cuda.is_available(),
      "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
if not torch.cuda.is_available() and os.environ.get("ALLOW_CPU") != "1":
    print("error: no GPU (set ALLOW_CPU=1 to run on the CPU anyway)")
    sys.exit(2)
cfg = json.load(open(sys.argv[1]))
print("config", sys.argv[1], "->", cfg["out"])
EOF
cat "$DEST/env.txt"
OUTDIR=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["out"])' "$CONFIG")

start=$(date +%s)
# SIGTERM at the budget: the sweep stops its workers; finished runs are complete, the others
# resume from their last checkpoint the next time this script runs on them.
timeout --kill-after=30 "$BUDGET" \
    "$PY" -m newton_lab sweep "$CONFIG" --workers "$WORKERS" --threads 1 --no-report --no-progress
rc=$?
echo "sweep exit status $rc after $(( $(date +%s) - start )) s (124: stopped at the budget)"

"$PY" -m newton_lab sweep "$CONFIG" --dry-run > "$DEST/status.txt" 2>&1
cat "$DEST/status.txt"
"$PY" -m newton_lab report "$OUTDIR" --no-plots > "$DEST/report.md" 2>&1 || true
# What comes back from the device is limited (8 files, 16 MiB each, 64 MiB in all): the runs'
# small files in one archive; checkpoints only of unfinished runs (a paper-protocol checkpoint
# with Adam's state is ≈ 10 MB), at most MAX_CKPT of them, one file each.
find "$OUTDIR" -mindepth 2 -maxdepth 2 \( -name config.json -o -name metrics.jsonl -o -name result.json \
    -o -name failed.json \) -print0 | tar czf "$DEST/runs.tar.gz" --null -T -
kept=0
for run in "$OUTDIR"/*/; do
    name=$(basename "$run")
    [ -f "$run/result.json" ] && continue
    [ -f "$run/checkpoint.pt" ] || continue
    if [ "$kept" -lt "${MAX_CKPT:-5}" ]; then
        cp "$run/checkpoint.pt" "$DEST/ckpt-$name.pt" && kept=$((kept + 1))
    else
        echo "checkpoint of $name not returned (more than MAX_CKPT=${MAX_CKPT:-5} unfinished runs): it restarts from scratch"
    fi
done
ls -la "$DEST"
