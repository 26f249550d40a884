#!/usr/bin/env bash
# Side-by-side speed run: cnnc's whole-model criterion bench (`--bench models`) and the peer
# frameworks' bench (../shared/peers/bench.py: TensorFlow/Keras, PyTorch, ONNX Runtime, 2 threads)
# alternately, ROUNDS times, on the same machine in one session, so that both see the same
# machine state (this VM's speed drifts by up to 2x over hours). Logs go to
# target/side_by_side/; compare the medians over rounds.
#
#   PEERS=~/.cache/cnnc-peers [BACKEND=native] bash benches/scripts/side_by_side.sh [ROUNDS]
#
# BACKEND is the criterion filter of cnnc's side: `kernels` (the default backend) or `native`
# (the generated crate). The peers' JSON results go beside the logs (../shared is read-only).
#
# Needs the peers' venv (bash ../shared/peers/install.sh, ~5 GB). Takes ~6 min per round.
set -eu
ROUNDS=${1:-2}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers}
PEERS=${PEERS:-$HOME/.cache/cnnc-peers}
PY=$PEERS/venv/bin/python
FWS=${FWS:-keras-tf,torch-cl,torch-compile,ort}
MODELS=${MODELS:-mnist_cnn,lenet5,cifar_cnn,resnet18_cifar}
BACKEND=${BACKEND:-kernels}
OUT=$ROOT/target/side_by_side
mkdir -p "$OUT"
[ -x "$PY" ] || { echo "error: no peers venv at $PEERS (run $PEERS_DIR/install.sh)" >&2; exit 1; }
cargo bench -p cnnc-benches --bench models --no-run
for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r: cnnc"
  cargo bench -p cnnc-benches --bench models -- "$BACKEND" 2>&1 \
    | grep -E '^(train_step|infer_b1)/|time:|thrpt:' | tee "$OUT/cnnc_$r.txt"
  echo "== round $r: peers ($FWS)"
  (cd "$PEERS_DIR" && PEERS=$PEERS PEERS_RESULTS="$OUT/peers_$r.json" PEERS_WORK="$PEERS/work" \
    "$PY" bench.py --fw "$FWS" --models "$MODELS" --no-lock) 2>&1 \
    | sed -n '/^model/,$p' | tee "$OUT/peers_$r.txt"
done
