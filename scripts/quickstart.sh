#!/usr/bin/env bash
# README command 1: install, then run the offline quick-start (RPO on the shipped HH sample, SmolLM2-135M, CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
# --resume: a second call continues an interrupted run, or says the finished one has nothing left to train
exec .venv/bin/rpo_train --config quickstart --resume "$@"
