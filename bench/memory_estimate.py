"""The memory estimate (`rpo_train --estimate`) against measurements, and what it predicts for 7B runs.

    python bench/memory_estimate.py            # CPU: the quickstart (SmolLM2-135M) and tiny runs, 7B estimates (~5 min)
    python bench/memory_estimate.py --gpu      # on a GPU: the bench's random 7B in NF4 against torch.cuda.max_memory_allocated
    python bench/memory_estimate.py --gpu --layers 8   # the same at 8 of its 32 decoder layers

On a CPU the estimate (fake tensors, the run's own data) is compared with the same tensor counter on real tensors in
the real run, phase by phase. On a GPU a short real run of the `gpu` shape (random Llama-2-7B with a 49,152 vocabulary,
built in memory by bench/standins.py; NF4, 4 pairs, 512 tokens, the shipped HH sample: no hub) writes its predicted and measured peaks into metrics.jsonl; the script reads them back.
Writes bench/results/memory_estimate{,_gpu}.json and .md.
"""
import argparse, json, sys, tempfile, time, warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import HERE, markdown_table

SHAPES = {"colab_t4_mistral7b": {}, "colab_t4_mistral7b, Llama-3-8B shape (128k vocab)": {"model": "meta-llama/Meta-Llama-3-8B-Instruct"},
          "bench gpu shape (random 7B, 4 pairs)": {"model": "random-7b", "micro_batch_size": 4, "contrast_batch_size": 4,
                                                   "eval_batch_size": 8, "loss": "rpo"}}


def cpu_checks(out: Path) -> dict:
    import torch
    from rpo_nb.sources import load_tokenizer
    from rpo_nb.memory import TensorMemory
    from rpo_nb.config import load_config, run_data
    from rpo_nb.estimate import estimate_memory, measure_phases
    from rpo_nb.cli import run
    rows, checks = [], []
    for name, over in (("tiny", {}), ("quickstart", {"max_steps": 2})):
        d = Path(tempfile.mkdtemp())
        cfg = load_config(name, output_dir=str(d / "run"), cache_dir=str(d / "cache"), progress=False, plots=False, **over)
        tok = load_tokenizer(cfg.model)
        t = time.perf_counter(); est = measure_phases(cfg, "cpu", data=run_data(cfg, tok)); seconds = time.perf_counter() - t
        with TensorMemory(len(tok)) as real: run(cfg)
        for phase, e in est.items():
            r = real.phases[phase]
            checks.append({"config": name, "phase": phase, "estimated_mb": e["peak"] / 2**20, "measured_mb": r["peak"] / 2**20,
                           "ratio": e["peak"] / r["peak"], "estimate_s": seconds})
    for name, over in SHAPES.items():
        cfg = load_config("colab_t4_mistral7b", **over)
        t = time.perf_counter(); est = estimate_memory(cfg, "cuda", gpu_memory=15.8e9); seconds = time.perf_counter() - t
        p = est["phases"]
        rows.append({"run": name, **{ph: p[ph]["peak"] / 1e9 for ph in p}, "needed": est["needed"] / 1e9,
                     "frozen": p["training step"]["frozen weights"] / 1e9, "seconds": seconds, "fits_t4": est["fits"]})
    res = {"device": "CPU", "torch": torch.__version__, "checks": checks, "estimates": rows}
    md = ["## Memory estimate against the tensor counter in real runs (CPU, real tensors)\n",
          markdown_table(checks, [("config", "config", "s"), ("phase", "phase", "s"), ("estimated_mb", "estimated (MiB)", ".2f"),
                                  ("measured_mb", "measured (MiB)", ".2f"), ("ratio", "ratio", ".3f")]),
          "\n\n## Estimates for 7B runs (worst batch: every answer fills max_length; GB)\n",
          markdown_table(rows, [("run", "run", "s"), ("frozen", "frozen weights", ".2f"), ("reference pass", "reference pass", ".2f"),
                                ("training step", "training step", ".2f"), ("held-out evaluation", "held-out eval", ".2f"),
                                ("needed", "needed (+ allowance)", ".2f"), ("fits_t4", "fits a T4 (15.8 GB)", ""),
                                ("seconds", "estimate (s)", ".0f")])]
    return res, "\n".join(md) + "\n"


def gpu_check(out: Path, layers: int | None = None) -> dict:
    import torch
    from vs_trl import CONFIGS, model_source
    from rpo_nb.config import load_config
    from rpo_nb.cli import run
    d = Path(tempfile.mkdtemp())
    # the shipped HH sample (data_path None), not the hub's Anthropic/hh-rlhf: the check runs without network
    cfg = load_config("colab_t4_mistral7b", model=model_source(dict(CONFIGS["gpu"], layers=layers)), data_path=None, data_dir=None,
                      micro_batch_size=4, contrast_batch_size=4,
                      eval_batch_size=8, max_train_items=64, max_test_items=32, max_steps=4, warmup_steps=1,
                      output_dir=str(d / "run"), cache_dir=str(d / "cache"), progress=False, plots=False, save_steps=100)
    run(cfg)
    records = [json.loads(l) for l in (d / "run" / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in records if "memory/predicted_needed_mb" in r)
    steps = [r["memory/allocated_mb"] for r in records if "memory/allocated_mb" in r]
    checks = [{"phase": "training step", "estimated_mb": first["memory/predicted_training_step_mb"], "measured_mb": max(steps)},
              {"phase": "loading + reference pass", "estimated_mb": first["memory/predicted_reference_pass_mb"],
               "measured_mb": first["memory/loading_and_reference_allocated_mb"]}]
    for c in checks: c["ratio"] = c["estimated_mb"] / c["measured_mb"]
    res = {"device": torch.cuda.get_device_name(0), "layers": layers or 32, "checks": checks}
    md = (f"## Memory estimate against torch.cuda.max_memory_allocated ({res['device']}, random 7B NF4 at {res['layers']} of 32 "
          f"layers, its own data)\n\n") + \
         markdown_table(checks, [("phase", "phase", "s"), ("estimated_mb", "estimated (MiB)", ".0f"), ("measured_mb", "measured (MiB)", ".0f"),
                                 ("ratio", "ratio", ".3f")]) + "\n"
    return res, md


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true"); p.add_argument("--out_dir", default=str(HERE / "results"))
    p.add_argument("--layers", type=int, help="--gpu: decoder layers of the random 7B (default 32)")
    a = p.parse_args()
    warnings.simplefilter("ignore")
    out = Path(a.out_dir); out.mkdir(parents=True, exist_ok=True)
    res, md = gpu_check(out, a.layers) if a.gpu else cpu_checks(out)
    name = "memory_estimate_gpu" if a.gpu else "memory_estimate"
    (out / f"{name}.json").write_text(json.dumps(res, indent=1)); (out / f"{name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
