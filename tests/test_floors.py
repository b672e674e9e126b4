"""The declared dependency floors are versions the code works with: a fresh environment with every requirement at its
floor (torch excepted: only the 2.13 CPU build installs here without multi-GB CUDA downloads) trains the tiny config."""
import configparser, os, subprocess, sys, venv
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).parents[1]


def floors() -> list[str]:
    cfg = configparser.ConfigParser(); cfg.read(ROOT / "settings.ini")
    pins = []
    for r in map(Requirement, cfg["DEFAULT"]["requirements"].split()):
        lows = [s.version for s in r.specifier if s.operator == ">="]
        assert lows, f"{r}: no floor declared"
        if r.name != "torch": pins.append(f"{r.name}=={lows[0]}")
    return pins


def test_the_declared_floors_train_the_tiny_config(tmp_path):
    env_dir = tmp_path / "floors"
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / "bin" / "python")
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    (tmp_path / "cons.txt").write_text("torch==2.13.0\n")
    for args in (["torch==2.13.0"], ["-c", str(tmp_path / "cons.txt"), *floors()],
                 ["--no-deps", "--no-build-isolation", str(ROOT)]):
        r = subprocess.run(pip + args, capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0, (args[:3], r.stderr[-3000:])
    import json
    from packaging.version import Version
    names = [p.split("==")[0] for p in floors()]
    r = subprocess.run([py, "-c", f"import importlib.metadata as m, json; print(json.dumps({{d: m.version(d) for d in {names!r}}}))"],
                       capture_output=True, text=True)
    installed = json.loads(r.stdout)
    for pin in floors():   # what pip installed really is the floor, not something newer
        name, v = pin.split("==")
        assert Version(installed[name]) == Version(v), (pin, installed[name])
    out = tmp_path / "run"
    r = subprocess.run([py, "-m", "rpo_nb.cli", "--config", "tiny", "--output_dir", str(out), "--max_steps", "4",
                        "--progress", "false"], capture_output=True, text=True, timeout=900, cwd=tmp_path,
                       env=dict(os.environ, HF_HUB_OFFLINE="1", RPO_NB_CACHE=str(tmp_path / "cache"), MPLBACKEND="Agg"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "adapter" / "adapter_model.safetensors").exists() and (out / "training_curves.png").exists()
    assert "4 steps on 96 items" in r.stdout
