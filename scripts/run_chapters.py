"""Run chapters' tests one notebook per process, with exactly the nbdev flags asked for, and report each one.

    python scripts/run_chapters.py [--flags cuda] [--workers 8] [--timeout 300] [--budget 80] [--out FILE] nbs/06_model.ipynb ...

Each notebook runs as `nbdev_test` runs it (nbdev.test.test_nb: the cells of settings.ini's `tst_flags` are skipped
unless named in --flags; the notebook's own folder as the working directory; the project root on sys.path), but called
directly with its arguments: `python -c 'from nbdev.test import nbdev_test; nbdev_test()' --flags cuda --path NB`
silently drops both (fastcore's call_parse calls the function with its defaults under -c) and runs the whole suite with
no flag. Each result names the flags that were on, so a report cannot claim what did not run. Prints one line per
chapter and a last line `chapters: N ok, N failed`; exit status 1 if any failed; --out writes the results as JSON, and
rewrites it as each notebook finishes (so that a run stopped from outside keeps what finished). Each notebook's process
leads a process session of its own, killed whole at its time-out (--timeout, and no more than what is left of --budget);
a SIGTERM to the runner kills them too. With several workers each notebook's process gets its share of the CPU threads.
"""
import argparse, json, os, signal, subprocess, sys, tempfile, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_flags(flags: list[str]) -> tuple[list[str], list[str]]:
    "(flags that stay off, flags turned on): settings.ini's tst_flags less those asked for, and those asked for."
    from nbdev.config import get_config
    known = get_config().tst_flags.split()
    unknown = [f for f in flags if f not in known]
    if unknown: raise SystemExit(f"run_chapters: unknown flag(s) {unknown}; settings.ini's tst_flags are {known}")
    return sorted(set(known) - set(flags)), sorted(flags)


def run_one(nb: str, flags: list[str]) -> dict:
    "One notebook's tests in this process, as nbdev_test runs each one."
    from nbdev.config import get_config
    from nbdev.test import test_nb
    off, on = test_flags(flags)
    cfg = get_config()
    path = Path(nb).resolve()
    os.chdir(cfg.nbs_path if cfg.nbs_path.exists() else ROOT)   # nbdev_test's working directory; test_nb then enters the notebook's
    ok, seconds = test_nb(path, skip_flags=off, force_flags=on, basepath=cfg.config_path, do_print=False)
    return {"chapter": path.stem, "ok": bool(ok), "seconds": round(seconds, 1), "flags_on": on, "flags_off": off}


def run_isolated(nb: str, flags: list[str], timeout: float, procs: dict | None = None, threads: int | None = None) -> dict:
    """One notebook in a fresh process (one chapter's state or crash cannot touch another), killed after `timeout` s.
    The child starts its own process session and its output goes to a file, not a pipe: on time-out the whole group
    (the memory probes and other processes it started too) is killed, and nothing a grandchild holds open can block us."""
    with tempfile.TemporaryDirectory() as d:
        out, log, t = Path(d) / "result.json", Path(d) / "output.log", time.perf_counter()
        cmd = [sys.executable, __file__, "--one", nb, "--result", str(out), *(["--flags", " ".join(flags)] if flags else [])]
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
                                  if threads and "OMP_NUM_THREADS" not in os.environ else {}))
        with open(log, "wb") as f:
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT, env=env,
                                 start_new_session=True)
            if procs is not None: procs[nb] = p
            try:
                p.wait(timeout=max(1, timeout)); timed_out = False
                try: os.killpg(p.pid, signal.SIGKILL)   # anything it left running
                except ProcessLookupError: pass
            except subprocess.TimeoutExpired: kill_group(p); timed_out = True
            finally:
                if procs is not None: procs.pop(nb, None)
        text = log.read_text(errors="replace")
        if timed_out:
            res = {"chapter": Path(nb).stem, "ok": False, "timed_out": True, "error": f"killed after {timeout:.0f} s\n{text[-2500:]}"}
        else:
            res = json.loads(out.read_text()) if out.exists() else {"chapter": Path(nb).stem, "ok": False}
            if not res["ok"]: res["error"] = text[-3000:] or f"exit status {p.returncode}"
        res["wall_seconds"] = round(time.perf_counter() - t, 1)
        res.setdefault("flags_on", sorted(flags))
        return res


def kill_group(p: subprocess.Popen, grace: float = 5):
    "SIGTERM to the process group `p` leads, SIGKILL after `grace` s; then reap `p`, and SIGKILL whatever is left of the group."
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30)):
        try: os.killpg(p.pid, sig)
        except ProcessLookupError: pass
        try: p.wait(wait); break
        except subprocess.TimeoutExpired: continue
    try: os.killpg(p.pid, signal.SIGKILL)   # a grandchild that outlived its parent
    except ProcessLookupError: pass


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="+")
    p.add_argument("--flags", default="", help="space-separated nbdev test flags to turn on (e.g. cuda)")
    p.add_argument("--workers", type=int, default=1, help="notebooks at once, each in its own process")
    p.add_argument("--timeout", type=float, default=600, help="seconds for one notebook")
    p.add_argument("--budget", type=float, help="seconds for all of them: a notebook gets at most what is left of it, and "
                                                "one with under 5 s left is not started")
    p.add_argument("--out", help="write the results as JSON here, updated as each notebook finishes")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    flags = a.flags.split()
    if a.one:   # the child: one notebook, result to a file
        res = run_one(a.notebooks[0], flags)
        Path(a.result).write_text(json.dumps(res)); return 0
    test_flags(flags)   # an unknown flag stops here, before anything runs
    t0, lock, procs = time.monotonic(), threading.Lock(), {}
    results = {nb: {"chapter": Path(nb).stem, "ok": False, "status": "not started", "flags_on": sorted(flags)} for nb in a.notebooks}
    workers = max(1, min(a.workers, len(a.notebooks)))
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None

    def save():
        if not a.out: return
        tmp = Path(a.out).with_suffix(".tmp")
        tmp.write_text(json.dumps({"flags": flags, "workers": workers, "timeout_s": a.timeout, "budget_s": a.budget,
                                   "chapters": list(results.values())}, indent=1))
        tmp.replace(a.out)   # whole or not at all: a kill between two chapters keeps the chapters that finished

    def one(nb):
        left = a.timeout if a.budget is None else min(a.timeout, a.budget - (time.monotonic() - t0) - 1)
        if left < 5:
            with lock: results[nb].update(status="not started", error=f"no time left in the {a.budget:.0f} s budget"); save()
            return
        with lock: results[nb]["status"] = "running"; save()
        res = run_isolated(nb, flags, left, procs, threads)
        res["status"] = "ok" if res["ok"] else "timed out" if res.get("timed_out") else "failed"
        with lock: results[nb] = res; save()

    def stop(signum, frame):   # killed from outside (the GPU check's budget): end the chapters' process groups too
        lock.acquire(timeout=2)   # the workers write no more: what finished is kept, what ran is marked stopped
        for r in results.values():
            if r.get("status") == "running": r.update(status="stopped", error="the runner was stopped from outside while it ran")
        save()
        for q in list(procs.values()): kill_group(q, 2)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    save()
    with ThreadPoolExecutor(workers) as pool: list(pool.map(one, a.notebooks))
    for r in results.values():
        print(f"{r['chapter']}: {'ok' if r['ok'] else r['status'].upper()} in {r.get('seconds', r.get('wall_seconds', 0))} s "
              f"(flags on: {' '.join(r['flags_on']) or 'none'})", flush=True)
        if not r["ok"]: print("  " + r.get("error", "")[-1500:].replace("\n", "\n  "), file=sys.stderr)
    n_ok = sum(r["ok"] for r in results.values())
    print(f"chapters: {n_ok} ok, {len(results) - n_ok} failed")
    return 0 if n_ok == len(results) else 1


if __name__ == "__main__": sys.exit(main())
