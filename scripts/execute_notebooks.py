"""Execute the notebooks in place, keeping their outputs (what the docs site and GitHub show), and record what they
were executed from in nbs/_executed.json, so that a test can tell when a stored output is older than its code.

    python scripts/execute_notebooks.py                 # every notebook (~10 min on 2 CPU cores)
    python scripts/execute_notebooks.py 14_train 18_plots

Each notebook runs in a fresh kernel from nbs/, offline, with inline figures; then `nbdev_clean` strips the
metadata (outputs stay). A notebook whose cell fails is not written, and the script says which cell.
"""
import hashlib, json, os, re, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).parents[1]
NBS = ROOT / "nbs"
RECORD = NBS / "_executed.json"
CI_SKIPS = ("#| cuda", "#| slow", "#| eval: false")   # flags of cells CI does not run (settings.ini tst_flags, eval: false)
# what a stored output must not keep: loading and conversion bars (tqdm's, drawn even when nothing is slow) and the
# kernels package's notice that it skipped a hub check because this machine is offline (a reader online never sees it),
# and DeepSpeed's notice, on import, that it found no GPU
NOISE = re.compile(r"^.*(?:\d+%\|.*\||it/s\]|s/it\]|Loading weights|Loading checkpoint shards|Converting and de-quantizing"
                   r"|Skipping publisher trust check|real_accelerator\.py.*Setting accelerator to CPU).*$", re.M)


def strip_noise(nb) -> int:
    "Drop progress-bar displays and noise lines from `nb`'s stored outputs; how many outputs changed or went."
    n = 0
    for c in nb.cells:
        keep = []
        for o in c.get("outputs", []):
            data = o.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data or NOISE.fullmatch("".join(data.get("text/plain", "")).strip() or "-"):
                n += 1; continue
            if o.get("output_type") == "stream" and NOISE.search(o.text):
                n += 1
                o.text = "".join(l for l in o.text.splitlines(keepends=True) if not NOISE.fullmatch(l.rstrip("\n")))
                if not o.text.strip(): continue
            keep.append(o)
        if "outputs" in c: c.outputs = keep
    return n


def code_hash(nb: dict) -> str:
    "What a notebook's outputs depend on in the notebook itself: its code cells' sources, in order."
    return hashlib.sha1(json.dumps(["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]).encode()).hexdigest()


def module_hash() -> str:
    "What they depend on in the package: the sources of rpo_nb/*.py and its shipped configs."
    h = hashlib.sha1()
    for f in sorted((ROOT / "rpo_nb").glob("*.py")) + sorted((ROOT / "rpo_nb" / "configs").glob("*.yaml")):
        if f.name != "_modidx.py": h.update(f.name.encode()); h.update(f.read_bytes())
    return h.hexdigest()


def package_version() -> str:
    import configparser
    cfg = configparser.ConfigParser(); cfg.read(ROOT / "settings.ini")
    return cfg["DEFAULT"]["version"]


def execute(path: Path) -> float:
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    # cells CI skips (GPU-only, slow, never run) are not run here either: stored without output
    skip = [c for c in nb.cells if c.cell_type == "code" and any(f in c.source for f in CI_SKIPS)]
    for c in skip: c.cell_type = "raw"
    t = time.time()
    try: NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(NBS)}}).execute()
    finally:
        for c in skip: c.cell_type, c.outputs, c.execution_count = "code", [], None
    strip_noise(nb)
    nbformat.write(nb, path)
    return time.time() - t


def main(names: list[str]):
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1")
    os.environ.pop("MPLBACKEND", None)   # inline figures, not Agg
    paths = sorted(NBS.glob("*.ipynb")) if not names else [NBS / (n if n.endswith(".ipynb") else n + ".ipynb") for n in names]
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    for p in paths:
        print(f"executing {p.name}", flush=True)
        seconds = execute(p)
        subprocess.run([str(Path(sys.executable).parent / "nbdev_clean"), "--fname", str(p)], check=True, cwd=ROOT)
        nb = json.loads(p.read_text())
        record[p.name] = {"code": code_hash(nb), "modules": module_hash(), "version": package_version(),
                          "seconds": round(seconds, 1), "date": time.strftime("%Y-%m-%d")}
        RECORD.write_text(json.dumps(dict(sorted(record.items())), indent=1) + "\n")
        print(f"  {seconds:.0f} s", flush=True)
    print(f"total {sum(r['seconds'] for r in record.values()):.0f} s over {len(record)} notebooks")


if __name__ == "__main__":
    main(sys.argv[1:])
