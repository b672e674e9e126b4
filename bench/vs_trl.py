"""rpo_nb vs TRL's DPOTrainer on the same model, data, LoRA, batches (same pairs, same order), β and optimiser.

    python bench/vs_trl.py --config quick       # tiny model, seconds: checks that the benchmark works (CI)
    python bench/vs_trl.py --config reference   # SmolLM2-135M-Instruct, 200 HH pairs, batch 4 x 256 tokens, CPU
    python bench/vs_trl.py --config gpu         # random 7B-architecture model in 4-bit, 512 tokens (needs CUDA)
    python bench/vs_trl.py --config gpu --depths 4,8 --pairs 32 --one_process   # as scripts/gpu_check.sh runs it
    python bench/vs_trl.py --config gpu_toy     # the same code path at a toy width on a CPU (the GPU check's dry run)

The `gpu` model is a random-weight stand-in (bench/standins.py) built in each process straight in the compute dtype on
the GPU and quantised there: nothing is saved or reloaded. `--layers N` builds N of its 32 decoder layers; `--depths a,b`
measures every system at both depths and extrapolates each figure linearly to 32 layers (the decoder layers are
identical, so step time and memory grow by the same amount per layer): slope = (f(b) - f(a)) / (b - a) and
f(32) = f(b) + (32 - b) * slope, for each system's median step, epoch and peak memory; the ratios at 32 layers are
those of the extrapolated figures (JSON: `per_layer`).

By default each system runs in its own process (clean peak memory, no shared caches), the systems alternating within
each round. With `--one_process` (the GPU check: one interpreter start, CUDA start and import of torch, transformers
and TRL instead of five) every system runs in this one process, in the same alternating order, at each depth in turn,
after one discarded warm-up step of TRL (CUDA, cuBLAS and bitsandbytes kernels, LoRA set-up paid before anything is
timed); each builds its own model in memory (the stand-in's build is a second or two), everything is freed and
accelerate's state reset in between, and the peak memory is CUDA's max allocated since the system started, less what
was still allocated then (recorded: `allocated_at_start_mb`, 0 when nothing leaked). On a CPU that mode's peak is the
process's resident high-water mark, cumulative across systems: not a per-system figure. Results so far are written to
`vs_trl_<config>.partial.json` after each system in both modes, so a run stopped early keeps what it measured.
Systems: TRL DPOTrainer with and without `precompute_ref_log_probs`, and this package's DPO and RPO steps
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
    "gpu": dict(model="random-7b", pairs=64, batch=4, max_length=512, quantization="nf4", rounds=1, layers=32),
    "gpu_toy": dict(model="random-7b-toy", pairs=8, batch=4, max_length=128, quantization="nf4", rounds=1, layers=2),
}
FULL_LAYERS = 32   # Llama-2-7B's decoder layers: what --depths extrapolates to
SYSTEMS = ["trl", "rpo_nb_dpo", "trl_precompute", "rpo_nb_rpo"]
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear")
BETA, LR, MAX_GRAD_NORM = 0.1, 5e-5, 1.0


def model_source(cfg: dict) -> str:
    """The model folder: a name, or for 'random-7b' ('random-7b-toy': narrow, for CPU dry runs) a Llama-2-7B-shaped
    stand-in folder of `cfg['layers']` decoder layers whose random weights this process builds in memory when loaded."""
    if not cfg["model"].startswith("random-7b"): return cfg["model"]
    from rpo_nb.sources import cache_path
    from standins import install_random_loader, llama7b_folder
    toy, layers = cfg["model"].endswith("-toy"), cfg.get("layers") or FULL_LAYERS
    install_random_loader()
    return str(llama7b_folder(cache_path("models") / f"standin-llama-7b-{layers}L{'-toy' if toy else ''}", layers, toy))


def depths(cfg: dict) -> list:
    "The decoder depths to measure at: --depths, else the configured one (None: the model as it is)."
    return cfg.get("depths") or [cfg.get("layers")]


def per_depth(worker, cfg: dict, *args) -> dict:
    "`worker` at each depth in this one process, freeing everything in between: {depth: its result}."
    import gc, torch
    out = {}
    for d in depths(cfg):
        left = torch.cuda.memory_allocated() / 2**20 if torch.cuda.is_available() else None   # what an earlier depth left: 0
        out[str(d)] = dict(worker(dict(cfg, layers=d), *args), allocated_at_start_mb=left)
        gc.collect()
        if torch.cuda.is_available(): torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    return out


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
                mbs, pos = micro_batches(items, idx, cfg["batch"], pid, True)   # host memory: the step moves each in turn
                out = contrast_step(policy, mbs, pos, lambda lp: batch_loss(rc, lp, idx, items, ref, emb), accelerator)
                accelerator.clip_grad_norm_(params, MAX_GRAD_NORM)
                optimizer.step(); optimizer.zero_grad(set_to_none=True)
            steps.append(t.seconds); losses.append(float(out["loss"]))
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
                mbs, pos = micro_batches(items, idx, cfg["batch"], pid, True)
                contrast_step(policy, mbs, pos, lambda lp: batch_loss(cfgs[loss], lp, idx, items, ref, emb if loss == "rpo" else None))
                torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM); optimizer.step(); optimizer.zero_grad(set_to_none=True)
            times[loss].append(t.seconds)
    return times


WORKERS = {"trl": lambda cfg: trl_worker(cfg, False), "trl_precompute": lambda cfg: trl_worker(cfg, True),
           "rpo_nb_dpo": lambda cfg: rpo_nb_worker(cfg, "dpo"), "rpo_nb_rpo": lambda cfg: rpo_nb_worker(cfg, "rpo")}


def in_this_process(fn, cfg: dict) -> dict:
    """`fn(cfg)` in this process as if it were a fresh one: its own scratch folder, accelerate's state reset, CUDA's peak
    counter reset; afterwards everything it made is freed. Its peak memory is counted from what was allocated at its start."""
    import gc, tempfile, torch
    from rpo_nb.embeddings import release_embedders
    try:
        from accelerate.state import AcceleratorState, GradientState
        AcceleratorState._reset_state(True); GradientState._reset_state()
    except (ImportError, AttributeError): pass
    cuda = torch.cuda.is_available()
    gc.collect()
    if cuda: torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    left = torch.cuda.memory_allocated() / 2**20 if cuda else None
    with tempfile.TemporaryDirectory() as d:
        os.environ["RPO_NB_BENCH_TMP"] = d
        with Timer() as t: res = fn(cfg)
    if cuda and isinstance(res.get("peak_mb"), float): res["peak_mb"] -= left
    res.update(allocated_at_start_mb=left, wall_s=t.seconds)
    release_embedders(); gc.collect()
    if cuda: torch.cuda.empty_cache()
    return res


def one_process(cfg: dict, on_progress) -> tuple[dict, dict, dict]:
    """Every system at every depth in this process (see the module's docstring): ({system: [{depth: result}] per round},
    the interleaved RPO/DPO step times at the deepest depth, {warm-up seconds, ...})."""
    os.environ.setdefault("HF_DATASETS_CACHE", os.path.join(__import__("tempfile").mkdtemp(prefix="vs_trl."), "hf_datasets"))
    info = {}
    with Timer() as t: in_this_process(WORKERS["trl"], dict(cfg, layers=depths(cfg)[0], pairs=cfg["batch"]))   # warm-up, discarded
    info["warmup_s"] = t.seconds
    results = {s: [] for s in SYSTEMS}
    for r in range(cfg["rounds"]):
        for s in SYSTEMS: results[s].append({})
        for d in depths(cfg):
            for s in SYSTEMS:   # alternating TRL and rpo_nb
                results[s][r][str(d)] = in_this_process(WORKERS[s], dict(cfg, layers=d))
                print(f"round {r + 1}, {d} layers: {s} done in {results[s][r][str(d)]['wall_s']:.1f} s", flush=True)
                on_progress(results)
    inter = in_this_process(lambda c: dict(interleaved_worker(c)), dict(cfg, layers=depths(cfg)[-1]))
    print(f"interleaved RPO/DPO steps done in {inter['wall_s']:.1f} s", flush=True)
    return results, {k: inter[k] for k in ("dpo", "rpo")}, info


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
    p.add_argument("--pairs", type=int, help="pairs per epoch (a multiple of the batch of 4)")
    p.add_argument("--layers", type=int, help="decoder layers of the random-7b stand-in (default 32)")
    p.add_argument("--depths", help="comma-separated decoder depths to measure at and extrapolate from, e.g. 4,8")
    p.add_argument("--out_dir", default=str(HERE / "results"), help="where the JSON and Markdown results go")
    p.add_argument("--worker"); p.add_argument("--result")
    p.add_argument("--only_interleaved", action="store_true", help="only (re)measure RPO's step against DPO's, interleaved")
    p.add_argument("--one_process", action="store_true", help="every system in this one process (see above)")
    a = p.parse_args()
    cfg = dict(CONFIGS[a.config], **{k: v for k, v in (("rounds", a.rounds), ("pairs", a.pairs), ("layers", a.layers)) if v})
    if a.depths: cfg["depths"] = sorted(int(d) for d in a.depths.split(","))
    if a.depths and not cfg["model"].startswith("random-7b"): sys.exit("--depths needs a random-7b configuration")
    if cfg.get("depths"): cfg["layers"] = cfg["depths"][-1]
    if a.worker:
        warnings.simplefilter("ignore")
        res = (per_depth(trl_worker, cfg, a.worker == "trl_precompute") if a.worker.startswith("trl") else
               interleaved_worker(cfg) if a.worker == "interleaved" else per_depth(rpo_nb_worker, cfg, a.worker.split("_")[-1]))
        Path(a.result).write_text(json.dumps(res)); return
    passed = [x for k in ("pairs", "layers", "depths") if getattr(a, k) for x in (f"--{k}", str(getattr(a, k)))]
    out = Path(a.out_dir); out.mkdir(parents=True, exist_ok=True)
    if a.only_interleaved:
        saved = json.loads((out / f"vs_trl_{a.config}.json").read_text())
        saved["interleaved"] = run_worker(Path(__file__), ["--config", a.config, "--worker", "interleaved", *passed])
        write_report(out, a.config, saved); return
    if a.config == "gpu":
        import torch
        if not torch.cuda.is_available(): sys.exit("the gpu configuration needs CUDA")
    if a.one_process: warnings.simplefilter("ignore")
    partial = out / f"vs_trl_{a.config}.partial.json"   # what has been measured so far, should the run be stopped early
    def save(results):   # whole or not at all (written aside, then renamed): a kill mid-write keeps the last one
        tmp = partial.with_suffix(".tmp"); tmp.write_text(json.dumps({"config": cfg, "one_process": a.one_process, "results": results}))
        tmp.replace(partial)
    t_all = time.time()
    if a.one_process:
        results, interleaved, info = one_process(cfg, save)
    else:
        results, info = {s: [] for s in SYSTEMS}, {}
        for r in range(cfg["rounds"]):
            for s in SYSTEMS:   # alternating: each round runs every system once, in turn
                t0 = time.time(); results[s].append(run_worker(Path(__file__), ["--config", a.config, "--worker", s, *passed]))
                print(f"round {r + 1}: {s} done in {time.time() - t0:.0f} s", flush=True)
                save(results)
        interleaved = run_worker(Path(__file__), ["--config", a.config, "--worker", "interleaved", *passed])
    by_depth = {str(d): {s: [r[str(d)] for r in runs] for s, runs in results.items()} for d in depths(cfg)}
    for r in [r for res in by_depth.values() for r in res["trl"] + res["trl_precompute"]]:   # the same text, the same tokens
        if r["trl_tokens"] is not None and r["trl_tokens"] != r["tokens"]: print("warning: TRL tokenised differently", flush=True)
    summaries = {d: summarise(res, cfg) for d, res in by_depth.items()}
    deepest = str(depths(cfg)[-1])
    rows, ratios = summaries[deepest]
    import platform, torch, trl, transformers
    meta = {"config": a.config, **cfg, "trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores ({platform.processor() or platform.machine()})",
            "date": time.strftime("%Y-%m-%d"), "one_process": a.one_process, "seconds": round(time.time() - t_all, 1), **info,
            "seconds_by_system": {d: {s: [round(r["wall_s"], 1) for r in runs if "wall_s" in r] for s, runs in res.items()}
                                  for d, res in by_depth.items()},
            "measured": ("per system and depth: every training step's wall time (CUDA synchronised), the one-time passes "
                         "(reference log-probs, prompt embeddings), the epoch (steps plus one-time passes), real tokens per "
                         "second, peak memory (" + ("CUDA max allocated, from the system's start" if torch.cuda.is_available()
                         else "peak RSS" + (", cumulative in one process" if a.one_process else "")) + "); the ratios are "
                         "rpo_nb RPO over TRL's best configuration (the one with the shorter epoch), step ratios batch by batch")}
    if cfg["model"].startswith("random-7b"):
        meta["standin"] = (f"random weights built in each process in the compute dtype on the device (bench/standins.py), "
                           f"{cfg['layers']} of {FULL_LAYERS} decoder layers")
    saved = {"meta": meta, "rows": rows, "ratios": ratios, "raw": by_depth[deepest], "interleaved": interleaved}
    if len(summaries) > 1:
        saved["by_depth"] = {d: {"rows": r, "ratios": q} for d, (r, q) in summaries.items()}
        saved["per_layer"] = per_layer_scaling(summaries)
    write_report(out, a.config, saved)
    partial.unlink(missing_ok=True)


def per_layer_scaling(summaries: dict) -> dict:
    """Each system's median step, epoch and peak memory per decoder layer (the slope between the shallowest and deepest
    depth measured), extrapolated to Llama-2-7B's 32 layers; and the headline ratios at 32 layers from those."""
    (d1, (rows1, _)), (d2, (rows2, ratios2)) = min(summaries.items(), key=lambda x: int(x[0])), max(summaries.items(), key=lambda x: int(x[0]))
    n1, n2 = int(d1), int(d2)
    out = {"depths": [n1, n2], "full_layers": FULL_LAYERS, "systems": {},
           "method": (f"linear in the decoder layers: per system, slope = (f({n2}) - f({n1})) / {n2 - n1} and f({FULL_LAYERS}) = "
                      f"f({n2}) + {FULL_LAYERS - n2} * slope, for the median step, the epoch and the peak memory; the ratios at "
                      f"{FULL_LAYERS} are those of the extrapolated figures")}
    for r1, r2 in zip(rows1, rows2):
        sys_ = out["systems"][r2["system"]] = {}
        for k in ("median_step_s", "epoch_s", "peak_mb"):
            slope = (r2[k] - r1[k]) / (n2 - n1)
            sys_[f"{k}_per_layer"], sys_[f"{k}_at_{FULL_LAYERS}"] = slope, r2[k] + (FULL_LAYERS - n2) * slope
    ours, best = out["systems"]["rpo_nb_rpo"], out["systems"][ratios2["trl_best"]]
    for k, name in (("median_step_s", "ratio_step_time"), ("epoch_s", "ratio_epoch_time"), ("peak_mb", "ratio_peak_mem")):
        out[f"{name}_at_{FULL_LAYERS}"] = ours[f"{k}_at_{FULL_LAYERS}"] / best[f"{k}_at_{FULL_LAYERS}"]
    return out


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
    depth = f", {meta['standin']}" if meta.get("standin") else ""
    scaling = ""
    if "per_layer" in saved:
        pl, full = saved["per_layer"], FULL_LAYERS
        srows = [{"system": s, **v} for s, v in pl["systems"].items()]
        scaling = (f"Per decoder layer (measured at {pl['depths'][0]} and {pl['depths'][1]} layers) and extrapolated to {full}:\n\n" +
                   markdown_table(srows, [("system", "system", "s"), ("median_step_s_per_layer", "step per layer (s)", ".4f"),
                                          ("peak_mb_per_layer", "peak per layer (MB)", ".0f"), (f"median_step_s_at_{full}", f"median step at {full} (s)", ".2f"),
                                          (f"epoch_s_at_{full}", f"epoch at {full} (s)", ".1f"), (f"peak_mb_at_{full}", f"peak at {full} (MB)", ".0f")]) +
                   f"\n\nAt {full} layers, extrapolated: RPO over TRL's best step {pl[f'ratio_step_time_at_{full}']:.3f}, epoch "
                   f"{pl[f'ratio_epoch_time_at_{full}']:.3f}, peak memory {pl[f'ratio_peak_mem_at_{full}']:.3f}.\n\n")
    md = (f"## vs TRL: `{config}` ({meta['device']}, {meta['date']})\n\n{meta['pairs']} HH pairs, batch {meta['batch']}, "
          f"≤ {meta['max_length']} tokens, model `{meta['model']}` ({meta['quantization']}{depth}); TRL {meta['trl']}, transformers "
          f"{meta['transformers']}, torch {meta['torch']}; {meta['rounds']} round(s).\n\n{table}\n\n{scaling}"
          f"RPO over TRL's best DPO configuration (`{ratios['trl_best']}`): `{line}`; per-batch step ratio vs TRL without "
          f"precompute {ratios['ratio_step_time_vs_trl_no_precompute']:.3f}. rpo_nb RPO step over rpo_nb DPO step: "
          f"{ratios['ratio_rpo_over_dpo_step']:.3f} across the two separate runs{inter}.\n")
    (out / f"{name}.md").write_text(md)
    print(md)
    print(line)


if __name__ == "__main__": main()
