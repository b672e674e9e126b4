#!/usr/bin/env bash
# README command 2: install, check notebooks and module are in sync, run the notebooks' tests, run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# the docs test opens every page in a real headless browser: Debian's chromium and its driver
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
export PATH="$PWD/.venv/bin:$PATH"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg

tree_hash() { find rpo_nb -name '*.py' -type f -print0 | sort -z | xargs -0 sha1sum | sha1sum; }
before=$(tree_hash)
nbdev_export
if [ "$before" != "$(tree_hash)" ]; then
  echo "FAIL: nbdev_export changed rpo_nb/: the module was out of sync with the notebooks (run nbdev_export and commit)." >&2
  git status --short rpo_nb >&2 || true
  exit 1
fi
echo "== notebooks and module in sync"
# one notebook at a time: two at once on two cores oversubscribe PyTorch's threads (the tutorial took 752 s beside the
# from-scratch chapter, 171 s alone; all 25 notebooks take about 14 minutes in a row and 19 two at a time)
nbdev_test --n_workers "${NBDEV_WORKERS:-1}" --timing
echo "== nbdev_test passed"
python -m pytest tests/ -q "$@"
