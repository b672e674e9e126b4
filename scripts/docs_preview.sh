#!/usr/bin/env bash
# Offline docs preview (Quarto cannot be installed everywhere): render every notebook as stored (they are committed
# executed; scripts/execute_notebooks.py re-executes them) to HTML in _docs_preview/, open each page in headless
# Chromium and keep a screenshot beside it. The real site is built by `nbdev_docs` (.github/workflows/deploy.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
python scripts/docs_check.py
echo "open _docs_preview/index.html"
