"""Assemble the docs page nbs/benchmarks.md from the latest results in bench/results/ (run after a benchmark)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import markdown_table

HERE = Path(__file__).parent
HEADER = """---
title: Benchmarks
description: rpo_nb against TRL's DPOTrainer on the same work, what contrast batches larger than memory cost, how well the memory estimate predicts, and peak memory by kind against TRL.
---

Both benchmarks are scripts in `bench/` that run every system in its own process, alternate the systems, and
write JSON and Markdown to `bench/results/` (this page is assembled from them by `python bench/report.py`).

```sh
python bench/vs_trl.py --config reference   # rpo_nb vs TRL DPOTrainer, SmolLM2-135M on CPU (~50 min on 2 cores)
python bench/vs_trl.py --config gpu         # random 7B-architecture model in 4-bit, 512 tokens (needs CUDA)
python bench/contrast_batch.py              # B = 64 pairs per loss at m = 4 in memory vs 16 accumulated steps of 4
python bench/memory_estimate.py             # the memory estimate (rpo_train --estimate) against measured peaks
python bench/memory_vs_trl.py               # peak tensor memory of a 7B step by kind, rpo_nb and TRL, on fake tensors
```

**Same work on both sides.** The same model and LoRA (r = 16, α = 32, all linear layers), the same 200 HH pairs
(ones that fit 256 tokens, so neither side truncates) in the same order, batches of 4 pairs, β = 0.1, AdamW,
gradient clipping at 1.0, gradient checkpointing (TRL's default) and no dropout (TRL's default
`disable_dropout=True`); the tokens each side sees per batch are checked to be identical. TRL runs with and
without `precompute_ref_log_probs`; the ratios compare rpo_nb's RPO with the faster of the two.

**Where rpo_nb's time goes, and TRL's.** TRL 1.16 already computes log-probs only at answer positions and in
tiles. Without precomputation each TRL step also runs the reference forward pass; with it, TRL pays that pass
once up front, but as a separate pass over every batch in its own padding. rpo_nb computes the reference
log-probs once, in length-sorted batches, and cached on disk; a pair's chosen and rejected answers share their
prompt's forward pass (shared-prefix packing with a 4-D attention mask), which removes a third to a half of
the token slots on dialogue data, where prompts are long and answers short; and no per-step extras
(TRL logs entropy and logit statistics at every token). RPO's own cost, the prompt-similarity weights and
the M×N contrast, is about a millisecond: its step equals DPO's within noise.

"""


NOT_MEASURED = ("Not measured yet: the machines this was developed on had no GPU. On any machine with one GPU and no network, "
                "`bash scripts/gpu_check.sh` (with the payload `bash scripts/device_payload.sh` gathers, copied beside it) "
                "measures it in under 7 minutes, with the T4 recipe in fp16, the chapters' `cuda` tests and a one-GPU FSDP resume, "
                "and writes the figures to `bench/results/`.")


def gpu_check_section(results: Path) -> str:
    "The last real GPU check (bench/results/gpu_check.json and its parts' files), or what says it has not run yet."
    f = results / "gpu_check.json"
    s = __import__("json").loads(f.read_text()) if f.exists() else None
    if not s or s.get("dry_run"):
        return f"## The GPU check\n\n{NOT_MEASURED}\n\n"
    load = lambda name: __import__("json").loads((results / name).read_text()) if (results / name).exists() else None
    rows = [{"part": n, "status": p["status"], "seconds": p.get("seconds"), "budget": p.get("budget_s"),
             "figures": p.get("line") or p.get("why", "")} for n, p in s["parts"].items()]
    out = [f"## The GPU check ({s.get('device')}, torch {s.get('torch')}, {s['date']}, commit `{(s.get('commit') or '?')[:10]}`)\n",
           f"`bash scripts/gpu_check.sh`, {s['seconds']:.0f} s in all; random-weight stand-ins of the models "
           "(bench/standins.py), the shipped HH sample, the real MiniLM's embeddings from the payload.\n",
           markdown_table(rows, [("part", "part", "s"), ("status", "status", "s"), ("seconds", "seconds", ".0f"),
                                 ("budget", "budget (s)", ".0f"), ("figures", "figures", "s")])]
    if (t4 := load("t4_recipe_gpu.json")) and t4.get("steps"):
        out.append(f"\n### The Colab-T4 recipe in fp16 ({t4['layers']} decoder layers)\n")
        out.append(markdown_table(t4["steps"], [("step", "step", "d"), ("loss", "loss", ".4f"), ("loss_scale", "loss scale", ".0f"),
                                                ("skipped", "skipped", "d"), ("memory/allocated_mb", "peak allocated (MB)", ".0f"),
                                                ("step_time", "step (s)", ".2f")]))
        if "estimate_over_measured_training_step" in t4:
            est = t4["estimate"]
            out.append(f"\nEstimate printed before the run against the measured peaks: training step "
                       f"{est['memory/predicted_training_step_mb']:,.0f} MB estimated, {t4['measured_peak_allocated_mb']:,.0f} MB "
                       f"measured (x{t4['estimate_over_measured_training_step']:.3f}); needed with allowances "
                       f"{est['memory/predicted_needed_mb']:,.0f} MB.")
    if (ch := load("chapters_gpu.json")) and ch.get("chapters"):
        out.append(f"\n### Chapters' tests with the `{' '.join(ch.get('flags', [])) or 'no'}` flag on\n")
        out.append(markdown_table(ch["chapters"], [("chapter", "chapter", "s"), ("ok", "passed", ""), ("seconds", "seconds", ".1f")]))
    return "\n".join(out) + "\n\n"


def render(results: Path = HERE / "results") -> str:
    "The page's text from the result files in `results`."
    parts = [HEADER]
    for name in ["vs_trl_reference.md", "vs_trl_gpu.md", "vs_trl_reference_gpu.md", "contrast_batch.md", "scale.md", "merge_memory.md",
                 "memory_estimate.md", "memory_estimate_gpu.md", "memory_vs_trl.md"]:
        f = results / name
        if f.exists():
            text = f.read_text()
            parts.append((text if text.startswith("## ") else f"## {name.removesuffix('.md').replace('_', ' ')}\n\n{text}") + "\n")
        elif name == "vs_trl_gpu.md":
            parts.append(f"## vs TRL: `gpu`\n\n{NOT_MEASURED}\n\n")
        elif name == "memory_estimate_gpu.md" and not (results / "t4_recipe_gpu.json").exists():
            parts.append("## Memory estimate against a GPU\n\nNot measured yet (no GPU lent): `bash scripts/gpu_check.sh` compares "
                         "the estimate the T4 recipe prints with `torch.cuda.max_memory_allocated` in its steps.\n\n")
    parts.append(gpu_check_section(results))
    return "".join(parts)


def main():
    out = HERE.parent / "nbs" / "benchmarks.md"
    out.write_text(render())
    print("wrote", out)


if __name__ == "__main__": main()
