"""What a contrast batch larger than memory costs: B items per loss at m items of activations (two-pass step)
against B/m plain steps of m items with gradient accumulation, on the same data.

    python bench/contrast_batch.py                      # SmolLM2-135M-Instruct, B = 64 pairs, m = 4, CPU or GPU
    python bench/contrast_batch.py --model rpo-nb/tiny-random-llama --pairs 16   # seconds: checks the script

Both sides run the package's defaults (gradient checkpointing, LoRA dropout 0.05) in their own processes,
alternating, and do the same optimizer step at the end. Time is the wall time of the forward and backward
passes; memory is the process's peak (RSS on CPU, max allocated on GPU) and its growth over the memory held
after loading the model. Writes bench/results/contrast_batch.json and .md.
"""
import argparse, json, os, statistics, sys, time, warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import HERE, Timer, benchmark_pairs, current_memory_mb, markdown_table, process_peak_mb, run_worker


def worker(a) -> dict:
    import torch
    from rpo_nb.sources import load_tokenizer
    from rpo_nb.batches import pad_token_id, to_device
    from rpo_nb.embeddings import embed_prompts, release_embedders
    from rpo_nb.logprobs import build_policy
    from rpo_nb.config import load_config
    from rpo_nb.scoring import make_items
    from rpo_nb.step import batch_loss, contrast_step, micro_batches
    tok = load_tokenizer(a.model)
    rows = benchmark_pairs(tok, a.pairs, a.max_length)
    items, pid = make_items(rows, "paired"), pad_token_id(tok)
    emb = embed_prompts(items.prompts, cache_dir=Path(os.environ["RPO_NB_BENCH_TMP"]) / "emb"); release_embedders()
    # the reference log-probs only shift the loss's inputs; their cost is outside the step (computed once)
    reference = torch.full((len(items), 2), -100.0)
    cfg = load_config(model=a.model, loss="rpo", micro_batch_size=a.micro)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    policy = build_policy(a.model, device=device, dropout=0.05, gradient_checkpointing=True)
    policy.train()
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-5)
    with torch.no_grad(): policy(**to_device(micro_batches(items, [0], 1, pid)[0][0], device))
    if torch.cuda.is_available(): torch.cuda.reset_peak_memory_stats()
    loaded = current_memory_mb()
    idx = list(range(a.pairs))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    with Timer() as t, autocast:
        if a.worker == "two_pass":
            mbs, pos = micro_batches(items, idx, a.micro, pid)
            out = contrast_step(policy, mbs, pos, lambda lp: batch_loss(cfg, lp, idx, items, reference, emb))
        else:   # plain steps of `micro` items, gradients accumulated
            n = a.pairs // a.micro
            for k in range(n):
                sub = idx[k * a.micro:(k + 1) * a.micro]
                mbs, pos = micro_batches(items, sub, a.micro, pid)
                out = contrast_step(policy, mbs, pos, lambda lp, s=sub: batch_loss(cfg, lp, s, items, reference, emb), grad_scale=1 / n)
    optimizer.step()
    return {"seconds": t.seconds, "peak_mb": process_peak_mb(), "loaded_mb": loaded,
            "step_mb": process_peak_mb() - (0 if torch.cuda.is_available() else loaded), "loss": float(out["loss"])}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--pairs", type=int, default=64)
    p.add_argument("--micro", type=int, default=4)
    p.add_argument("--max_length", type=int, default=256)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out_dir", default=str(HERE / "results"), help="where the JSON and Markdown results go")
    p.add_argument("--worker"); p.add_argument("--result")
    a = p.parse_args()
    if a.worker:
        warnings.simplefilter("ignore")
        Path(a.result).write_text(json.dumps(worker(a))); return
    args = ["--model", a.model, "--pairs", str(a.pairs), "--micro", str(a.micro), "--max_length", str(a.max_length)]
    res = {"accumulate": [], "two_pass": []}
    for r in range(a.rounds):
        for w in res:
            t0 = time.time(); res[w].append(run_worker(Path(__file__), args + ["--worker", w]))
            print(f"round {r + 1}: {w} {time.time() - t0:.0f} s", flush=True)
    med = {w: {k: statistics.median(x[k] for x in v) for k in ("seconds", "peak_mb", "step_mb")} for w, v in res.items()}
    ratios = {"time": med["two_pass"]["seconds"] / med["accumulate"]["seconds"],
              "peak_memory": med["two_pass"]["peak_mb"] / med["accumulate"]["peak_mb"],
              "step_memory": med["two_pass"]["step_mb"] / med["accumulate"]["step_mb"]}
    import torch
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    rows = [{"how": f"{a.pairs // a.micro} plain steps of {a.micro} pairs, accumulated (loss over {a.micro})", **med["accumulate"]},
            {"how": f"one two-pass step, B = {a.pairs} at m = {a.micro} (loss over {a.pairs})", **med["two_pass"]}]
    table = markdown_table(rows, [("how", "step", "s"), ("seconds", "time (s)", ".1f"), ("peak_mb", "peak memory (MB)", ".0f"),
                                  ("step_mb", "memory above the loaded model (MB)", ".0f")])
    md = (f"## Contrast batch larger than memory ({device}, {time.strftime('%Y-%m-%d')})\n\n`{a.model}`, HH pairs ≤ {a.max_length} tokens, "
          f"gradient checkpointing, LoRA r=16 dropout 0.05; median of {a.rounds} alternating rounds.\n\n{table}\n\n"
          f"Two-pass over accumulation: time ×{ratios['time']:.2f}, peak memory ×{ratios['peak_memory']:.2f} "
          f"(×{ratios['step_memory']:.2f} above the loaded model).\n")
    out = Path(a.out_dir); out.mkdir(parents=True, exist_ok=True)
    (out / "contrast_batch.json").write_text(json.dumps({"args": vars(a), "device": device, "median": med, "ratios": ratios, "raw": res}, indent=1))
    (out / "contrast_batch.md").write_text(md)
    print(md)


if __name__ == "__main__": main()
