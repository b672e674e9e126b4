"""rpo_nb vs TRL's DPOTrainer on the same model, data, LoRA, batches (same pairs, same order), β and optimiser.

    python bench/vs_trl.py --config quick       # tiny model, seconds: checks that the benchmark works (CI)
    python bench/vs_trl.py --config reference   # SmolLM2-135M-Instruct, 200 HH pairs, batch 4 x 256 tokens, CPU
    python bench/vs_trl.py --config gpu         # random 7B-architecture model in 4-bit, 512 tokens (needs CUDA)

Each system runs in its own process (clean peak memory, no shared caches), the systems alternate within each
round. Systems: TRL DPOTrainer with and without `precompute_ref_log_probs`, and this package's DPO and RPO steps
(reference log-probs and prompt embeddings computed once, shared prompts computed once). Both sides use
gradient checkpointing (TRL's default) and no dropout (TRL's default `disable_dropout=True`).

Figures: one epoch's wall time over the same N pairs in the same order, one-time passes (reference log-probs,
embeddings) included and shown separately; step times compared batch by batch on identical batches (the median
of per-batch ratios); real (non-pad) tokens per second; peak memory (RSS on CPU, max allocated on GPU).
Writes bench/results/vs_trl_<config>.json and .md and ends with one line:
ratio_step_time=... ratio_epoch_time=... ratio_peak_mem=...   (rpo_nb RPO over TRL's best DPO configuration)
"""
import argparse, json, os, statistics, sys, tempfile, time, warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import HERE, Timer, benchmark_pairs, markdown_table, process_peak_mb, run_worker

CONFIGS = {
    "quick": dict(model="rpo-nb/tiny-random-llama", pairs=16, batch=4, max_length=128, quantization="none", rounds=1),
    "reference": dict(model="HuggingFaceTB/SmolLM2-135M-Instruct", pairs=200, batch=4, max_length=256, quantization="none", rounds=1),
    "probe": dict(model="HuggingFaceTB/SmolLM2-135M-Instruct", pairs=12, batch=4, max_length=256, quantization="none", rounds=1),
    "gpu": dict(model="random-7b", pairs=64, batch=4, max_length=512, quantization="nf4", rounds=1),
}
SYSTEMS = ["trl", "rpo_nb_dpo", "trl_precompute", "rpo_nb_rpo"]
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear")
BETA, LR, MAX_GRAD_NORM = 0.1, 5e-5, 1.0


def model_source(cfg: dict) -> str:
    "The model folder: a name, or for 'random-7b' a random-initialised Llama-2-7B-shaped model written once."
    if cfg["model"] != "random-7b": return cfg["model"]
    import torch, transformers
    from rpo_nb.sources import cache_path, load_tokenizer
    dest = cache_path("models") / "random-llama-7b"
    if not (dest / "config.json").exists():
        tok = load_tokenizer("HuggingFaceTB/SmolLM2-135M-Instruct")
        c = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                     num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
        torch.manual_seed(0)
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            m = transformers.LlamaForCausalLM(c).to(torch.bfloat16)
        m.save_pretrained(dest); tok.save_pretrained(dest)
    return str(dest)


def tokens_per_batch(rows, batch: int) -> list[int]:
    return [sum(len(rows[i]["chosen_input_ids"]) + len(rows[i]["rejected_input_ids"]) for i in range(k, k + batch))
            for k in range(0, len(rows) - batch + 1, batch)]


def trl_worker(cfg: dict, precompute: bool) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from torch.utils.data import SequentialSampler
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer
    from rpo_nb.sources import load_tokenizer
    from rpo_nb.data import answer_text
    from rpo_nb.tokens import format_prompt
    from rpo_nb.model import load_model
    src = model_source(cfg)
    tok = load_tokenizer(src)
    rows = benchmark_pairs(tok, cfg["pairs"], cfg["max_length"])
    ds = Dataset.from_dict({"prompt": [format_prompt(p, tok) for p in rows["prompt"]],
                            "chosen": [answer_text(c) for c in rows["chosen"]], "rejected": [answer_text(r) for r in rows["rejected"]]})
    model = load_model(src, cfg["quantization"])
    n_params = model.num_parameters()
    cuda = torch.cuda.is_available()
    from rpo_nb.model import compute_dtype
    dt = compute_dtype("cuda") if cuda else torch.float32   # the same precision as the rpo_nb workers
    args = DPOConfig(output_dir=os.environ["RPO_NB_BENCH_TMP"], per_device_train_batch_size=cfg["batch"], gradient_accumulation_steps=1,
                     learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, max_steps=cfg["pairs"] // cfg["batch"],
                     logging_steps=1, save_strategy="no", eval_strategy="no", report_to=[], beta=BETA, max_length=cfg["max_length"],
                     gradient_checkpointing=True, bf16=dt == torch.bfloat16, fp16=dt == torch.float16, use_cpu=not cuda,
                     optim="adamw_torch", max_grad_norm=MAX_GRAD_NORM, precompute_ref_log_probs=precompute,
                     precompute_ref_batch_size=16, seed=0, dataloader_num_workers=0, disable_tqdm=True)
    steps, one_time = [], {}

    class InOrder(DPOTrainer):   # the same batches in the same order as rpo_nb's side
        def _get_train_sampler(self, *a, **k): return SequentialSampler(self.train_dataset)
        def _precompute_ref_logps(self, *a, **k):
            with Timer() as t: out = super()._precompute_ref_logps(*a, **k)
            one_time["reference_logps"] = one_time.get("reference_logps", 0) + t.seconds
            return out

    class StepTimes(TrainerCallback):
        def on_step_begin(self, *a, **k):
            if cuda: torch.cuda.synchronize()
            self.t = time.perf_counter()
        def on_step_end(self, *a, **k):
            if cuda: torch.cuda.synchronize()
            steps.append(time.perf_counter() - self.t)

    trainer = InOrder(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[StepTimes()],
                      peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA))
    trl_tokens = [sum(len(trainer.train_dataset[i][k]) for i in range(s, s + cfg["batch"])
                      for k in ("prompt_ids", "prompt_ids", "chosen_ids", "rejected_ids"))
                  for s in range(0, cfg["pairs"], cfg["batch"])] if "chosen_ids" in trainer.train_dataset.column_names else None
    with Timer() as t: trainer.train()
    return {"step_times": steps, "one_time": one_time, "train_seconds": t.seconds, "peak_mb": process_peak_mb(), "n_params": n_params,
            "tokens": tokens_per_batch(rows, cfg["batch"]), "trl_tokens": trl_tokens,
            "loss_first": trainer.state.log_history[0].get("loss")}


def rpo_nb_worker(cfg: dict, loss: str) -> dict:
    import torch
    from accelerate import Accelerator
    from rpo_nb.sources import load_tokenizer
    from rpo_nb.batches import pad_token_id
    from rpo_nb.embeddings import embed_prompts, release_embedders
    from rpo_nb.logprobs import build_policy
    from rpo_nb.config import load_config
    from rpo_nb.scoring import make_items, reference_logps
    from rpo_nb.step import batch_loss, contrast_step, micro_batches
    from rpo_nb.checkpoints import make_optimizer
    src = model_source(cfg)
    tok = load_tokenizer(src)
    rows = benchmark_pairs(tok, cfg["pairs"], cfg["max_length"])
    tmp = Path(os.environ["RPO_NB_BENCH_TMP"])
    rc = load_config(model=src, loss=loss, beta=BETA, micro_batch_size=cfg["batch"], quantization=cfg["quantization"],
                     gradient_checkpointing=True, lora_dropout=0.0, optimizer="adamw", learning_rate=LR,
                     max_grad_norm=MAX_GRAD_NORM, max_length=cfg["max_length"], cache_dir=str(tmp / "cache"), eval_batch_size=16)
    from rpo_nb.model import autocast_precision
    # the package's own choice: bf16 from Ampere on, fp16 (with loss scaling) on a T4 or V100, none on CPU
    accelerator = Accelerator(mixed_precision=autocast_precision("auto"))
    items, pid, one_time = make_items(rows, "paired"), pad_token_id(tok), {}
    emb = None
    if loss == "rpo":   # before the language model is loaded, and released after: the two never share memory
        with Timer() as t: emb = embed_prompts(items.prompts, rc.embedder, cache_dir=tmp / "cache" / "embeddings")
        release_embedders(); one_time["embeddings"] = t.seconds
    policy = build_policy(src, cfg["quantization"], device=str(accelerator.device), r=LORA["r"], alpha=LORA["lora_alpha"],
                          dropout=0.0, target_modules="all-linear", gradient_checkpointing=True)
    n_params = policy.language_model().num_parameters() - sum(p.numel() for p in policy.parameters() if p.requires_grad)   # the base's
    with Timer() as t: ref = reference_logps(policy, items, rc, pid, accelerator=accelerator)
    one_time["reference_logps"] = t.seconds
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = make_optimizer(rc, params, LR, str(accelerator.device))
    policy, optimizer = accelerator.prepare(policy, optimizer)
    steps, losses = [], []
    with Timer() as total:
        for k in range(0, cfg["pairs"] - cfg["batch"] + 1, cfg["batch"]):
            idx = list(range(k, k + cfg["batch"]))
            with Timer() as t:
                mbs, pos = micro_batches(items, idx, cfg["batch"], pid, True, accelerator.device)
                out = contrast_step(policy, mbs, pos, lambda lp: batch_loss(rc, lp, idx, items, ref, emb), accelerator)
                accelerator.clip_grad_norm_(params, MAX_GRAD_NORM)
                optimizer.step(); optimizer.zero_grad(set_to_none=True)
            steps.append(t.seconds); losses.append(out["loss"])
    return {"step_times": steps, "one_time": one_time, "train_seconds": total.seconds, "peak_mb": process_peak_mb(), "n_params": n_params,
            "tokens": tokens_per_batch(rows, cfg["batch"]), "loss_first": losses[0]}


def interleaved_worker(cfg: dict) -> dict:
    """rpo_nb's DPO and RPO steps on each batch back to back in one process (alternating which goes first), so that
    machine noise hits both alike: the per-batch ratio is RPO's own overhead."""
    import torch
    from rpo_nb.sources import load_tokenizer
    from rpo_nb.batches import pad_token_id
    from rpo_nb.embeddings import embed_prompts, release_embedders
    from rpo_nb.logprobs import build_policy
    from rpo_nb.config import load_config
    from rpo_nb.scoring import make_items, reference_logps
    from rpo_nb.step import batch_loss, contrast_step, micro_batches
    from rpo_nb.checkpoints import make_optimizer
    src = model_source(cfg)
    tok = load_tokenizer(src)
    rows = benchmark_pairs(tok, cfg["pairs"], cfg["max_length"])
    tmp = Path(os.environ["RPO_NB_BENCH_TMP"])
    cfgs = {loss: load_config(model=src, loss=loss, beta=BETA, micro_batch_size=cfg["batch"], quantization=cfg["quantization"],
                              max_length=cfg["max_length"], cache_dir=str(tmp / "cache"), eval_batch_size=16) for loss in ("dpo", "rpo")}
    items, pid = make_items(rows, "paired"), pad_token_id(tok)
    emb = embed_prompts(items.prompts, cache_dir=tmp / "cache" / "embeddings"); release_embedders()
    policy = build_policy(src, cfg["quantization"], r=LORA["r"], alpha=LORA["lora_alpha"], dropout=0.0, target_modules="all-linear",
                          gradient_checkpointing=True)
    ref = reference_logps(policy, items, cfgs["dpo"], pid)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfgs["dpo"], params, LR, "cuda" if torch.cuda.is_available() else "cpu")
    times = {"dpo": [], "rpo": []}
    for n, k in enumerate(range(0, cfg["pairs"] - cfg["batch"] + 1, cfg["batch"])):
        idx = list(range(k, k + cfg["batch"]))
        for loss in (("dpo", "rpo") if n % 2 == 0 else ("rpo", "dpo")):
            with Timer() as t:
                mbs, pos = micro_batches(items, idx, cfg["batch"], pid, True, "cuda" if torch.cuda.is_available() else "cpu")
                contrast_step(policy, mbs, pos, lambda lp: batch_loss(cfgs[loss], lp, idx, items, ref, emb if loss == "rpo" else None))
                torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM); optimizer.step(); optimizer.zero_grad(set_to_none=True)
            times[loss].append(t.seconds)
    return times


# dense bf16/fp16 tensor-core peaks (FLOP/s) by GPU name, for model FLOP utilisation
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12, "T4": 65e12,
              "V100": 125e12, "RTX 4090": 165e12, "RTX 3090": 71e12}


def model_flop_utilisation(tokens_per_s: float, n_params: int | None) -> float | None:
    "Training FLOPs (6 per parameter per token: forward, backward) over the GPU's peak; None on CPU or an unknown GPU."
    import torch
    if not torch.cuda.is_available() or not n_params: return None
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
    return 6 * n_params * tokens_per_s / peak if peak else None


def summarise(results: dict[str, list[dict]], cfg: dict) -> tuple[list[dict], dict]:
    "Per-system medians over rounds, and the batch-by-batch step ratios against TRL's best configuration."
    rows = []
    for name, runs in results.items():
        one = [sum(r["one_time"].values()) for r in runs]
        epoch = [sum(r["step_times"]) + o for r, o in zip(runs, one)]
        tokens = sum(runs[0]["tokens"])
        rows.append({"system": name, "epoch_s": statistics.median(epoch), "one_time_s": statistics.median(one),
                     "steps_s": statistics.median(sum(r["step_times"]) for r in runs),
                     "median_step_s": statistics.median(statistics.median(r["step_times"]) for r in runs),
                     "tokens_per_s": tokens / statistics.median(sum(r["step_times"]) for r in runs),
                     "peak_mb": statistics.median(r["peak_mb"] for r in runs), "loss_first": runs[0]["loss_first"]})
        rows[-1]["mfu"] = model_flop_utilisation(rows[-1]["tokens_per_s"], runs[0].get("n_params"))
        # stalls: the slowest step after the first (warm-up), over the median step
        rows[-1]["worst_step_ratio"] = max(max(r["step_times"][1:] or [0]) / statistics.median(r["step_times"]) for r in runs)
    by = {r["system"]: r for r in rows}
    best = min(("trl", "trl_precompute"), key=lambda s: by[s]["epoch_s"])
    per_batch = lambda sys_: [statistics.median(r["step_times"][i] for r in results[sys_]) for i in range(len(results[sys_][0]["step_times"]))]
    ours, theirs, dpo = per_batch("rpo_nb_rpo"), per_batch(best), per_batch("rpo_nb_dpo")
    ratios = {"trl_best": best,
              "ratio_step_time": statistics.median(a / b for a, b in zip(ours, theirs)),
              "ratio_epoch_time": by["rpo_nb_rpo"]["epoch_s"] / by[best]["epoch_s"],
              "ratio_peak_mem": by["rpo_nb_rpo"]["peak_mb"] / by[best]["peak_mb"],
              "ratio_rpo_over_dpo_step": statistics.median(a / b for a, b in zip(ours, dpo)),
              "ratio_step_time_vs_trl_no_precompute": statistics.median(a / b for a, b in zip(ours, per_batch("trl")))}
    return rows, ratios


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=list(CONFIGS), default="quick")
    p.add_argument("--rounds", type=int)
    p.add_argument("--out_dir", default=str(HERE / "results"), help="where the JSON and Markdown results go")
    p.add_argument("--worker"); p.add_argument("--result")
    p.add_argument("--only_interleaved", action="store_true", help="only (re)measure RPO's step against DPO's, interleaved")
    a = p.parse_args()
    cfg = dict(CONFIGS[a.config], **({"rounds": a.rounds} if a.rounds else {}))
    if a.worker:
        warnings.simplefilter("ignore")
        res = (trl_worker(cfg, a.worker == "trl_precompute") if a.worker.startswith("trl") else
               interleaved_worker(cfg) if a.worker == "interleaved" else rpo_nb_worker(cfg, a.worker.split("_")[-1]))
        Path(a.result).write_text(json.dumps(res)); return
    out = Path(a.out_dir); out.mkdir(parents=True, exist_ok=True)
    if a.only_interleaved:
        saved = json.loads((out / f"vs_trl_{a.config}.json").read_text())
        saved["interleaved"] = run_worker(Path(__file__), ["--config", a.config, "--worker", "interleaved"])
        write_report(out, a.config, saved); return
    if a.config == "gpu":
        import torch
        if not torch.cuda.is_available(): sys.exit("the gpu configuration needs CUDA")
    results = {s: [] for s in SYSTEMS}
    for r in range(cfg["rounds"]):
        for s in SYSTEMS:   # alternating: each round runs every system once, in turn
            t0 = time.time(); results[s].append(run_worker(Path(__file__), ["--config", a.config, "--worker", s]))
            print(f"round {r + 1}: {s} done in {time.time() - t0:.0f} s", flush=True)
    for r in results["trl"] + results["trl_precompute"]:   # the same text gives the same tokens on both sides
        if r["trl_tokens"] is not None and r["trl_tokens"] != r["tokens"]: print("warning: TRL tokenised differently", flush=True)
    rows, ratios = summarise(results, cfg)
    import platform, torch, trl, transformers
    meta = {"config": a.config, **cfg, "trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores ({platform.processor() or platform.machine()})",
            "date": time.strftime("%Y-%m-%d")}
    saved = {"meta": meta, "rows": rows, "ratios": ratios, "raw": results,
             "interleaved": run_worker(Path(__file__), ["--config", a.config, "--worker", "interleaved"])}
    write_report(out, a.config, saved)


def write_report(out: Path, config: str, saved: dict):
    "The JSON and Markdown results, and the one-line summary."
    meta, rows, ratios, cfg = saved["meta"], saved["rows"], saved["ratios"], CONFIGS[config]
    if "interleaved" in saved:
        il = saved["interleaved"]
        ratios["ratio_rpo_over_dpo_step_interleaved"] = statistics.median(r / d for r, d in zip(il["rpo"], il["dpo"]))
    name = f"vs_trl_{config}" + ("_gpu" if config != "gpu" and "CPU" not in meta["device"] else "")   # GPU runs never overwrite CPU figures
    (out / f"{name}.json").write_text(json.dumps(saved, indent=1))
    table = markdown_table(rows, [("system", "system", "s"), ("epoch_s", "epoch (s)", ".1f"), ("one_time_s", "one-time passes (s)", ".1f"),
                                  ("steps_s", "training steps (s)", ".1f"), ("median_step_s", "median step (s)", ".2f"),
                                  ("tokens_per_s", "tokens/s", ".0f"), ("mfu", "MFU", ".1%"), ("worst_step_ratio", "slowest step / median", ".2f"),
                                  ("peak_mb", "peak memory (MB)", ".0f")])
    line = " ".join(f"{k}={ratios[k]:.3f}" for k in ("ratio_step_time", "ratio_epoch_time", "ratio_peak_mem"))
    inter = (f"; interleaved in one process, batch by batch: {ratios['ratio_rpo_over_dpo_step_interleaved']:.3f}"
             if "ratio_rpo_over_dpo_step_interleaved" in ratios else "")
    md = (f"## vs TRL: `{config}` ({meta['device']}, {meta['date']})\n\n{meta['pairs']} HH pairs, batch {meta['batch']}, "
          f"≤ {meta['max_length']} tokens, model `{meta['model']}` ({meta['quantization']}); TRL {meta['trl']}, transformers "
          f"{meta['transformers']}, torch {meta['torch']}; {meta['rounds']} round(s).\n\n{table}\n\n"
          f"RPO over TRL's best DPO configuration (`{ratios['trl_best']}`): `{line}`; per-batch step ratio vs TRL without "
          f"precompute {ratios['ratio_step_time_vs_trl_no_precompute']:.3f}. rpo_nb RPO step over rpo_nb DPO step: "
          f"{ratios['ratio_rpo_over_dpo_step']:.3f} across the two separate runs{inter}.\n")
    (out / f"{name}.md").write_text(md)
    print(md)
    print(line)


if __name__ == "__main__": main()
