#!/usr/bin/env bash
# Shared launcher logic for pretrain.sh / finetune.sh / finetune_lora.sh (sourced, not run).
#   LAUNCHER   deepspeed (default; GPUs, one or many nodes) | torchrun (e.g. CPU tests) | python (one process)
#   NUM_GPUS   processes per node (default 8)       NUM_NODES  nodes (default 1)
#   HOSTFILE   DeepSpeed hostfile for several nodes (see scripts/hostfile.example); empty: this node only
#   NODE_RANK  this node's rank: torchrun (default 0); with HOSTFILE, set on every node to start each node's
#              DeepSpeed launcher there (--no_ssh) instead of from the first node over ssh
#   MASTER_ADDR / MASTER_PORT  rendezvous for torchrun / deepspeed (defaults 127.0.0.1 / 29500; MASTER_ADDR
#              is required with NUM_NODES > 1)
#   PYTHON     interpreter (default python)          EXTRA_ARGS  appended to the comm-train flags
set -euo pipefail
LAUNCHER="${LAUNCHER:-deepspeed}"
NUM_GPUS="${NUM_GPUS:-8}"
NUM_NODES="${NUM_NODES:-1}"
HOSTFILE="${HOSTFILE:-}"
if [[ "$NUM_NODES" != 1 && -z "${MASTER_ADDR:-}" ]]; then
    echo "NUM_NODES=$NUM_NODES: set MASTER_ADDR to the first node's address (every node must reach it)" >&2
    exit 2
fi
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
PYTHON="${PYTHON:-python}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# run_train FLAGS...: start `python -m comm_tower.train FLAGS... $EXTRA_ARGS` with the chosen launcher.
run_train() {
    # shellcheck disable=SC2206
    local extra=(${EXTRA_ARGS:-})
    case "$LAUNCHER" in
        deepspeed)
            local where=(--num_gpus "$NUM_GPUS" --num_nodes "$NUM_NODES")
            if [[ -n "$HOSTFILE" ]]; then
                where=(--hostfile "$HOSTFILE" --num_nodes "$NUM_NODES")
                if [[ -n "${NODE_RANK:-}" ]]; then where+=(--no_ssh --node_rank "$NODE_RANK"); fi
            fi
            exec deepspeed "${where[@]}" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
                --module comm_tower.train "$@" "${extra[@]}" ;;
        torchrun)
            exec "$PYTHON" -m torch.distributed.run --nproc_per_node "$NUM_GPUS" --nnodes "$NUM_NODES" \
                --node_rank "${NODE_RANK:-0}" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
                -m comm_tower.train "$@" "${extra[@]}" ;;
        python)
            exec "$PYTHON" -m comm_tower.train "$@" "${extra[@]}" ;;
        *)
            echo "LAUNCHER=$LAUNCHER: use deepspeed, torchrun or python" >&2; exit 2 ;;
    esac
}
