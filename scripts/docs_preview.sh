#!/usr/bin/env bash
# Offline docs preview (Quarto cannot be installed everywhere): nbdev's docs processing on a copy of the project, then
# every processed page to HTML in _docs_preview/ with the routes as navigation; open each page in headless
# Chromium and keep a screenshot beside it. The real site is built by `nbdev_docs` (.github/workflows/deploy.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
python scripts/docs_check.py
echo "open _docs_preview/index.html"
