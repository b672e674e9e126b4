"""Full-dataset scale: data preparation, batch planning and the reference pass, in seconds per 10,000 pairs.

    python bench/scale.py                 # 10k / 40k / 160k pairs (the shipped HH sample repeated), ~10 min on 2 cores
    python bench/scale.py --sizes 2000    # seconds: checks the script

Each size runs in its own process: read + validate (load_hh) → tokenise with SmolLM2's tokenizer
(tokenize_preferences, 512 / 256 tokens) → items (make_items) → plan one epoch of contrast batches for RPO
(random sets) and for DPO (length-grouped). The reference pass is measured on the tiny model (its cost per
token is the model's; what is measured here is that the pass's own work, sorting, packing and gathering, grows
linearly) on up to 8,000 pairs. Writes bench/results/scale.json and .md.
"""
import argparse, gzip, json, os, sys, tempfile, warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import HERE, Timer, markdown_table, run_worker


def worker(a) -> dict:
    warnings.simplefilter("ignore")
    from rpo_nb.sources import load_tokenizer, read_records, sample_path
    from rpo_nb.data import load_hh
    from rpo_nb.tokens import tokenize_preferences
    from rpo_nb.config import load_config
    from rpo_nb.scoring import make_items
    from rpo_nb.stage import _epoch_batches
    rows = read_records(sample_path("hh"))
    data = Path(os.environ["RPO_NB_BENCH_TMP"]) / "hh.jsonl.gz"
    with gzip.open(data, "wt") as f:
        for k in range(a.pairs): f.write(json.dumps(rows[k % len(rows)]) + "\n")
    tok = load_tokenizer("HuggingFaceTB/SmolLM2-135M-Instruct")
    out = {"pairs": a.pairs}
    with Timer() as t: ds = load_hh(data)
    out["read_validate_s"] = t.seconds
    with Timer() as t: tk = tokenize_preferences(ds, tok, 512, 256)
    out["tokenize_s"] = t.seconds
    with Timer() as t: items = make_items(tk, "paired")
    out["items_s"] = t.seconds
    for loss in ("rpo", "dpo"):
        cfg = load_config(loss=loss, micro_batch_size=8, contrast_batch_size=64)
        with Timer() as t: batches = _epoch_batches(cfg, items, 64, 0)
        out[f"plan_{loss}_s"] = t.seconds
        assert len(batches) == len(items) // 64
    out["n_items"] = len(items)
    return out


def reference_worker(a) -> dict:
    warnings.simplefilter("ignore")
    from rpo_nb.sources import TINY_MODEL, load_tokenizer, sample_path
    from rpo_nb.data import load_hh
    from rpo_nb.tokens import tokenize_preferences
    from rpo_nb.batches import pad_token_id
    from rpo_nb.logprobs import build_policy
    from rpo_nb.scoring import batched_logps, make_items
    tok = load_tokenizer(TINY_MODEL)
    ds = load_hh(sample_path("hh"))
    base = make_items(tokenize_preferences(ds, tok, 128, 96), "paired")
    from rpo_nb.scoring import Items
    reps = -(-a.pairs // len(base))
    items = Items((base.groups * reps)[:a.pairs], (base.prompts * reps)[:a.pairs], None, True)
    policy = build_policy(TINY_MODEL, gradient_checkpointing=False)
    with Timer() as t: batched_logps(policy, items, 32, pad_token_id(tok))
    return {"pairs": a.pairs, "reference_pass_s": t.seconds}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,40000,160000")
    p.add_argument("--reference_sizes", default="2000,8000")
    p.add_argument("--out_dir", default=str(HERE / "results"))
    p.add_argument("--worker", choices=["data", "reference"])
    p.add_argument("--pairs", type=int)
    p.add_argument("--result")
    a = p.parse_args()
    if a.worker:
        res = worker(a) if a.worker == "data" else reference_worker(a)
        Path(a.result).write_text(json.dumps(res)); return
    data = [run_worker(Path(__file__), ["--worker", "data", "--pairs", n]) for n in a.sizes.split(",")]
    ref = [run_worker(Path(__file__), ["--worker", "reference", "--pairs", n]) for n in a.reference_sizes.split(",")]
    per10k = lambda r, k: r[k] / r["pairs"] * 10_000
    rows = [{"pairs": r["pairs"], **{k.removesuffix("_s"): per10k(r, k) for k in r if k.endswith("_s")},
             "plan_rpo_total": r["plan_rpo_s"], "plan_dpo_total": r["plan_dpo_s"]} for r in data]
    ref_rows = [{"pairs": r["pairs"], "reference_pass": per10k(r, "reference_pass_s")} for r in ref]
    out = Path(a.out_dir); out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps({"data": data, "reference": ref}, indent=1))
    md = ("Seconds per 10,000 pairs (HH sample repeated; SmolLM2 tokenizer, 512/256 tokens; 2-core CPU unless noted)\n\n"
          + markdown_table(rows, [("pairs", "pairs", ",d"), ("read_validate", "read + validate", ".2f"), ("tokenize", "tokenise", ".1f"),
                                  ("items", "items", ".2f"), ("plan_rpo", "plan RPO epoch", ".3f"), ("plan_dpo", "plan DPO epoch", ".3f"),
                                  ("plan_rpo_total", "RPO epoch plan, s", ".2f"), ("plan_dpo_total", "DPO epoch plan, s", ".2f")])
          + "\n\nReference pass (tiny model, 128 tokens; the pass's own overhead):\n\n"
          + markdown_table(ref_rows, [("pairs", "pairs", ",d"), ("reference_pass", "s per 10k pairs", ".1f")]) + "\n")
    (out / "scale.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
