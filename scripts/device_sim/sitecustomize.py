"""The GPU check's dry run (scripts/gpu_check.py --dry-run): this machine's Python made to lack what the device lacks.

On sys.path only in the dry run, through PYTHONPATH, so that every process it starts (benchmark workers, nbdev's notebook
runs, accelerate's launcher) sees the same. $GPU_CHECK_SIM names a JSON file: `site`, the folder the payload's wheels were
installed into (as on the device), and `modules` and `dists`, the import and distribution names of the packages installed
here that the device does not have. Those import only from `site` (and so only if the payload brings them), and their
distribution metadata is seen only there (transformers' `is_..._available` reads both). $GPU_CHECK_SIM_BLOCK, a
comma-separated list of top-level modules, makes those fail to import, as on a device where they are broken (the
tests check that a part needing one is skipped at once).
"""
import json, os, re, sys


def _install():
    spec = os.environ.get("GPU_CHECK_SIM")
    if not spec: return
    from importlib.machinery import PathFinder
    cfg = json.load(open(spec))
    site, hidden, dists = cfg["site"], frozenset(cfg["modules"]), frozenset(cfg["dists"])
    norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()

    class DeviceSim(PathFinder):
        "PathFinder, except that a hidden top-level package is looked for in the payload's folder alone."
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if path is None and name.partition(".")[0] in hidden: return PathFinder.find_spec(name, [site], target)
            return PathFinder.find_spec(name, path, target)

        @classmethod
        def find_distributions(cls, *args, **kwargs):
            for d in PathFinder.find_distributions(*args, **kwargs):
                name = d.metadata["Name"] or ""
                if norm(name) in dists and not str(getattr(d, "_path", "")).startswith(site): continue
                yield d

    sys.meta_path[:] = [DeviceSim if f is PathFinder else f for f in sys.meta_path]
    if blocked := frozenset(filter(None, os.environ.get("GPU_CHECK_SIM_BLOCK", "").split(","))):
        class Blocked:
            @classmethod
            def find_spec(cls, name, path=None, target=None):
                if name.partition(".")[0] in blocked: raise ImportError(f"{name} blocked by GPU_CHECK_SIM_BLOCK (a simulated broken install)")
                return None
        sys.meta_path.insert(0, Blocked)
    for name in [m for m in sys.modules if m.partition(".")[0] in hidden]:   # anything a .pth file imported before us
        if not str(getattr(sys.modules[name], "__file__", "") or "").startswith(site): del sys.modules[name]


_install()
