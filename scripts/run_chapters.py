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
            seen = {}
            try:
                watch(p, max(1, timeout), seen); timed_out = False
                kill_tree([p], grace=0, seen=seen)   # anything it left running
            except subprocess.TimeoutExpired: kill_tree([p], seen=seen); timed_out = True
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


def _stat(pid: int) -> tuple[int, int, int] | None:
    "(parent pid, process group, start time) of a process, from /proc (Linux); None once it is gone."
    try: f = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError): return None
    return int(f[1]), int(f[2]), int(f[19])


def descendants(pid: int) -> dict[int, tuple[int, int]]:
    """Every process below `pid` as {pid: (process group, start time)}: also those that left its process group (torchrun's
    workers start sessions of their own). The start time tells a process from a later one given the same pid."""
    stats = {int(d.name): st for d in Path("/proc").glob("[0-9]*") if (st := _stat(int(d.name)))}
    children = {}
    for q, (ppid, _, _) in stats.items(): children.setdefault(ppid, []).append(q)
    out, todo = {}, [pid]
    while todo:
        for q in children.get(todo.pop(), []): out[q] = stats[q][1:]; todo.append(q)
    return out


def watch(p: subprocess.Popen, timeout: float, seen: dict) -> int:
    "`p.wait(timeout)`, reading p's process tree into `seen` every half second: once p ends its orphans can no longer be found."
    end = time.monotonic() + timeout
    while True:
        seen.update(descendants(p.pid))
        try: return p.wait(max(0.01, min(0.5, end - time.monotonic())))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= end: raise


def kill_tree(procs: list[subprocess.Popen], grace: float = 5, seen: dict | None = None):
    """End each process, its process group and every descendant (those in `seen` too, read while they stood): SIGTERM to
    all at once, SIGKILL after `grace` s to what is left; then reap the processes. A pid is signalled only while it
    is the process that was seen (same start time), and a group only through its leader."""
    seen = {} if seen is None else seen
    def signal_all(sig):
        for p in procs: seen.update(descendants(p.pid))
        for p in procs:   # the leaders: their groups (start_new_session), and the process itself while not reaped
            try:
                os.killpg(p.pid, sig)
                if p.poll() is None: os.kill(p.pid, sig)
            except (ProcessLookupError, PermissionError): pass
        for pid, (group, start) in seen.items():
            if (st := _stat(pid)) is None or st[2] != start: continue   # gone, or its pid reused since
            try: os.killpg(pid, sig) if group == pid else os.kill(pid, sig)
            except (ProcessLookupError, PermissionError): pass
    if grace > 0: signal_all(signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end and any(p.poll() is None for p in procs): time.sleep(0.1)
    signal_all(signal.SIGKILL)
    for p in procs:
        try: p.wait(5)
        except subprocess.TimeoutExpired: pass


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
        kill_tree(list(procs.values()), 2)
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
