#!/usr/bin/env bash
# Offline docs preview (Quarto cannot be installed everywhere): execute every notebook and render it to
# HTML in _docs_preview/. The real site is built by `nbdev_docs` (GitHub workflow .github/workflows/deploy.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p _docs_preview
cd nbs
for nb in index.ipynb [0-9]*.ipynb; do
  echo "rendering $nb"
  jupyter nbconvert --to html --execute --ExecutePreprocessor.timeout=1800 --output-dir ../_docs_preview "$nb"
done
echo "open _docs_preview/index.html"
