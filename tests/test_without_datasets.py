"""rpo_nb without the `datasets` package: every module imports, and a run on local data trains (the package is needed
only to read from the hub or a `save_to_disk` folder, which then says so)."""
import json, os, subprocess, sys
from pathlib import Path

def run(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    "`code` in a Python whose site-packages lack `datasets` (module and metadata: a copy of the folder made of links, less it)."
    import site
    real = Path(next(p for p in site.getsitepackages() if Path(p, "torch").exists()))
    overlay = tmp_path / "site-packages"
    overlay.mkdir()
    for entry in real.iterdir():
        if entry.name != "datasets" and not entry.name.startswith("datasets-"): (overlay / entry.name).symlink_to(entry)
    swap = f"import sys; sys.path[:] = [{str(overlay)!r} if p == {str(real)!r} else p for p in sys.path]\n"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", RPO_NB_CACHE=str(tmp_path / "cache"), MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-c", swap + "import importlib.util; assert importlib.util.find_spec('datasets') is None\n" + code],
                          capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)


def test_every_module_imports_and_the_tiny_config_trains_without_datasets(tmp_path):
    out = tmp_path / "run"
    r = run(f"""
import importlib, pkgutil, rpo_nb
for m in pkgutil.iter_modules(rpo_nb.__path__): importlib.import_module("rpo_nb." + m.name)
from rpo_nb.cli import main
main(["--config", "tiny", "--output_dir", {str(out)!r}, "--max_steps", "2", "--progress", "false", "--plots", "false"])
assert "datasets" not in sys.modules
""", tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "done.json").read_text())["steps"] == 2


def test_the_hub_without_datasets_says_what_to_install(tmp_path):
    r = run("""
from rpo_nb.data import load_hh
try: load_hh("Anthropic/hh-rlhf")
except Exception as e: print(type(e).__name__, e)
""", tmp_path)
    assert "needs the `datasets` package (pip install datasets)" in r.stdout, r.stdout + r.stderr[-2000:]
