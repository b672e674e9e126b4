#!/usr/bin/env bash
# The files a one-GPU machine without network lacks for scripts/gpu_check.sh, gathered here with the package registries:
#   bash scripts/device_payload.sh [DIR]        # default .device/ (git-ignored; send it along as `carry`)
# DIR/wheels (TRL, datasets, nbdev and their needs, bitsandbytes with only its CUDA 13 library, for CPython 3.12 x86-64),
# DIR/embeddings (the real MiniLM's embeddings of the shipped samples' prompts), DIR/MANIFEST.json.
# Needs the dev venv (scripts/install.sh): rpo_nb and the offline MiniLM compute the embeddings. Last line: size in MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
exec "$PY" scripts/device_payload.py "${1:-.device}"
