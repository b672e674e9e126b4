#!/usr/bin/env bash
# The GPU check: one command on a machine with one CUDA GPU and no network, in under 7 minutes.
#
#   bash scripts/device_payload.sh            # first, where pip works: .device/ (about 17 MiB; git-ignored)
#   bash scripts/gpu_check.sh                 # then on the GPU machine, with .device/ copied beside the repository
#   bash scripts/gpu_check.sh --dry-run       # every part on this CPU at toy sizes, the device simulated (about 3 min)
#
# It installs the payload's wheels (TRL, datasets, nbdev, bitsandbytes for CUDA 13, ...) with pip --no-index --no-deps
# into a folder of its own on PYTHONPATH, builds random-weight stand-ins of SmolLM2-135M-Instruct, all-MiniLM-L6-v2 and a
# Llama-2-7B shape from the configs and tokenizers in bench/standins/, and runs, each within its time budget and in this
# order: rpo_nb RPO and DPO against TRL at the `gpu` shape, every system in one process at 4 and 8 decoder layers,
# extrapolated to 32 (140 s), the Colab-T4 recipe in fp16 for 6 steps with its memory estimate against the measured
# peak (90 s), the GPU-sensitive chapters' tests with the `cuda` cells on, all 8 at once (90 s), and a one-GPU FSDP run
# with a resume from its checkpoint (50 s). Each part prints one line of figures and writes one JSON file to
# bench/results/, also when killed at its budget (what it finished); gpu_check.json sums them up (date, commit, device,
# versions, each part ok/failed/skipped with its seconds, budget and reason) and is rewritten after every part.
# GPU_CHECK_OUT=DIR: copies there too, at most 8 files. Options: --only vs_trl,fsdp   --budget chapters=120
# --payload DIR   --results DIR   --work DIR; GPU_CHECK_VS_TRL_ARGS="--rounds 3" is appended to vs_trl's arguments.
# Python: $PYTHON, default python3 (the one whose torch sees the GPU); the dry run defaults to .venv/bin/python.
# Details: scripts/gpu_check.py.
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [[ " $* " == *" --dry-run "* ]] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
exec "$PY" scripts/gpu_check.py "$@"
