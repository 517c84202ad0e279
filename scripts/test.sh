#!/usr/bin/env bash
# The project's test command (README, CI): pinned install, lint, then two lanes side by side:
#   main lane:   the whole suite in .venv, on the newest transformers;
#   venvs lane:  the package as shipped (scripts/test_wheel.sh: sdist + wheel into a fresh venv), exported
#                checkpoints in venvs without comm_tower (scripts/test_remote_code.sh), the lmms-eval plugin
#                (scripts/test_lmms.sh), the llava_patch suite and the core tests on LLaVA's transformers pin
#                (scripts/test_llava.sh), LLaVA-NeXT's train() and loader with COMM towers
#                (scripts/test_llava_next.sh).
# The venvs lane is mostly installs and single-process runs, so on 2 cores the two lanes take about the time of
# the longer one; each lane runs torch on one thread. Its lines are prefixed with `[venvs]`.
# COMM_TEST_SERIAL=1 runs the lanes one after the other (for reading one log top to bottom).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check .

main_lane() {
    # each venv builds DeepSpeed's CPU ops into its own folder (venvs with different DeepSpeed builds would
    # otherwise rebuild the same shared one back and forth)
    export TORCH_EXTENSIONS_DIR=$PWD/.venv/torch_extensions
    # the LLaVA-pin, LLaVA-NeXT and lmms-eval suites run in the venvs lane
    # two pytest workers, each taking whole files (module fixtures built once): much of the suite waits on
    # launched processes, so two workers keep both cores busy beside the venvs lane; the 30 slowest are listed
    .venv/bin/python -m pytest -q -n "${COMM_TEST_WORKERS:-2}" --dist loadfile --durations 30 tests \
        --ignore-glob='tests/test_llava_*' --ignore-glob='tests/test_next_*' \
        --ignore=tests/test_data_llava_parity.py --ignore=tests/test_eval_lmms_plugin.py
}
venvs_lane() {
    bash scripts/test_wheel.sh && bash scripts/test_remote_code.sh && bash scripts/test_lmms.sh &&
        bash scripts/test_llava.sh && bash scripts/test_llava_next.sh
}

if [ "${COMM_TEST_SERIAL:-0}" = 1 ]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
    main_lane
    venvs_lane
    exit 0
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
start=$SECONDS
log=$(mktemp "${TMPDIR:-/tmp}/comm_venvs_lane.XXXXXX")
# DeepSpeed launches of the venvs lane get their own default rendezvous port (tests that pick a port keep it)
(MASTER_PORT=29700 venvs_lane 2>&1 | sed -u 's/^/[venvs] /' >"$log"; exit "${PIPESTATUS[0]}") &
venvs_pid=$!
tail -n +1 -f "$log" --pid "$venvs_pid" &
tail_pid=$!
main_rc=0
main_lane || main_rc=$?
echo "main lane: exit $main_rc after $((SECONDS - start)) s"
venvs_rc=0
wait "$venvs_pid" || venvs_rc=$?
wait "$tail_pid" || true
echo "venvs lane: exit $venvs_rc after $((SECONDS - start)) s"
rm -f "$log"
[ "$main_rc" = 0 ] && [ "$venvs_rc" = 0 ]
