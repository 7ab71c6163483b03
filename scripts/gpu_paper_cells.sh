#!/usr/bin/env bash
# Paper-protocol ranking cells on a GPU (RESULTS.md part 5), time-boxed and resumable across
# machines. Meant for the device machine (docs/EXPERIMENTS.md, "Paper-protocol cells on a GPU"):
#
#   bash scripts/gpu_paper_cells.sh [CONFIG] [BUDGET_S] [WORKERS]
#
# CONFIG    sweep configuration (default configs/study/paper_cells.json)
# BUDGET_S  wall-clock budget of the sweep in seconds (default 420); at the limit the sweep is
#           interrupted and every unfinished run keeps its last checkpoint (one per evaluation)
# WORKERS   parallel runs on the one GPU (default 9: one per run of the default config)
#
# It needs no network: the package runs from src/ (PYTHONPATH) on the machine's torch, and
# MNIST comes from $NEWTON_LOSSES_CACHE (default .devcache/ in the checkout; copy
# ~/.cache/newton_losses/mnist/mnist_uint8.npz to .devcache/mnist/ and carry `.devcache`).
# Writes into $OUT (default /tmp/paper_cells_out): paper_cells.tar.gz (the sweep's output
# directory, checkpoints included, so that a later call can resume it: unpack it in the checkout
# and carry the directory), report.md (the sweep's report table) and env.txt (torch, GPU).
# Without a GPU it refuses to start unless ALLOW_CPU=1 (tests run it on a tiny config).
set -uo pipefail

CONFIG=${1:-configs/study/paper_cells.json}
BUDGET=${2:-420}
WORKERS=${3:-9}
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
    "$PY" -m newton_losses sweep "$CONFIG" --workers "$WORKERS" --threads 1 --no-report --no-progress
rc=$?
echo "sweep exit status $rc after $(( $(date +%s) - start )) s (124: stopped at the budget)"

"$PY" -m newton_losses sweep "$CONFIG" --dry-run > "$DEST/status.txt" 2>&1
cat "$DEST/status.txt"
"$PY" -m newton_losses report "$OUTDIR" > "$DEST/report.md" 2>&1 || true
tar czf "$DEST/paper_cells.tar.gz" "$OUTDIR"
ls -la "$DEST"
