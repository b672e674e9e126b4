"""Shared by the benchmark scripts: the benchmark's data, one worker process per measurement, peak memory, tables."""
import json, os, resource, subprocess, sys, time, warnings
from pathlib import Path

import torch

HERE = Path(__file__).parent


def resident_mb() -> float:
    "This process's resident set size now."
    with open("/proc/self/statm") as f: return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_resident_mb() -> float:
    "This process's peak resident set size."
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_memory_mb() -> float:
    "This process's memory now: CUDA allocated on a GPU, else resident set size."
    if torch.cuda.is_available(): return torch.cuda.memory_allocated() / 2**20
    return resident_mb()


def process_peak_mb() -> float:
    "This process's peak memory: CUDA max allocated on a GPU, else peak resident set size."
    if torch.cuda.is_available(): return torch.cuda.max_memory_allocated() / 2**20
    return peak_resident_mb()


def run_worker(script: Path, args: list[str], timeout: int = 7200) -> dict:
    "Run `script args --result FILE` in a fresh process (clean peak memory, no shared caches) and return its JSON."
    with __import__("tempfile").TemporaryDirectory() as d:
        out = Path(d) / "result.json"
        env = dict(os.environ, TQDM_DISABLE="1", TOKENIZERS_PARALLELISM="false",
                   HF_DATASETS_CACHE=str(Path(d) / "hf_datasets"), RPO_NB_BENCH_TMP=d)
        r = subprocess.run([sys.executable, str(script), *args, "--result", str(out)], env=env,
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode: raise RuntimeError(f"worker {args} failed:\n{r.stderr[-4000:]}")
        return json.loads(out.read_text())


def benchmark_pairs(tokenizer, n: int, max_length: int, seed: int = 0):
    """The first `n` training pairs of the shipped HH sample (split by prompt, shuffled with `seed`) that fit
    `max_length` tokens without truncation, tokenised; so that every system sees exactly the same text."""
    from rpo_nb.sources import sample_path
    from rpo_nb.data import load_hh, split_by_prompt
    from rpo_nb.tokens import tokenize_preferences
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = split_by_prompt(load_hh(sample_path("hh")), 0.1, seed)["train"].shuffle(seed=seed)
        tok = tokenize_preferences(train.select(range(min(len(train), 6 * n))), tokenizer, max_length=10 ** 6,
                                   max_prompt_length=10 ** 6)
    keep = [i for i, r in enumerate(tok) if max(len(r["chosen_input_ids"]), len(r["rejected_input_ids"])) <= max_length]
    if len(keep) < n: raise ValueError(f"only {len(keep)} pairs fit {max_length} tokens")
    return tok.select(keep[:n])


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    "Rows as a Markdown table; columns are (key, title, format)."
    head = "| " + " | ".join(t for _, t, _ in columns) + " |\n|" + "---|" * len(columns)
    body = ["| " + " | ".join(("–" if r.get(k) is None else format(r[k], f)) for k, _, f in columns) + " |" for r in rows]
    return "\n".join([head] + body)


class Timer:
    "Wall-clock seconds of a block (synchronising CUDA)."
    def __enter__(self):
        if torch.cuda.is_available(): torch.cuda.synchronize()
        self.t = time.perf_counter(); return self
    def __exit__(self, *a):
        if torch.cuda.is_available(): torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t
