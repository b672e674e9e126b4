"""Does RPO beat DPO here? The paper's comparison on real data, with seeds and paired intervals.

    python study/rpo_vs_dpo.py                   # CPU scale: HH sample, SmolLM2-135M, 3 seeds -> study/results.json
    python study/rpo_vs_dpo.py --scale gpu       # GPU scale: HH from the hub, 2,048 pairs, 5 seeds, batch 64 -> study/results_gpu.json
    python study/rpo_vs_dpo.py --scale reduced   # minutes: the same pipeline at toy scale -> study/results_reduced.json
    python study/rpo_vs_dpo.py --work runs/study # keep the runs there; run again to resume (finished runs are skipped)
    python study/rpo_vs_dpo.py --reuse study/results.json --reuse_methods "DPO,RPO τ=0.5"   # take those arms' runs from
                                                 # an earlier results file (the SFT and judge are retrained and compared)

Per seed (a different training subset, in a different order): SFT on the chosen answers, then every method from the
SFT adapter, which is also its reference, with the same pairs, steps, learning rate and batch. Every method and seed
is scored on the same held-out pairs (implicit-reward accuracy and margin, per pair) and samples answers for the same
held-out prompts (nucleus sampling, top-p 0.95). A judge (SmolLM2 trained with DPO on a disjoint pool of HH pairs,
used through its implicit reward; its own held-out accuracy reported) compares each answer with the data set's chosen
one. Each method is compared with DPO pair by pair: the difference per held-out pair (or prompt), averaged over seeds,
with a percentile bootstrap interval over pairs, and the difference of each seed alone. Two arms test what RPO's gain could come from: RPO on contrast sets of similar prompts (what the
cross-prompt term is meant for), and DPO with β set to RPO's effective own-pair β (β times the mean own-pair weight of
RPO's contrast sets: a smaller β alone); each is also compared with RPO on random sets. Chapter 22 reads the results.
"""
import argparse, json, os, platform, resource, shutil, statistics, subprocess, sys, time, warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# the paper's comparison first, then its ablations as the budget allows; every method sees the same pairs per step
METHODS = {
    "DPO": dict(loss="dpo"),
    "RPO τ=0.5": dict(loss="rpo", tau=0.5),
    "RPO τ=0.5, similar sets": dict(loss="rpo", tau=0.5, contrast_sets="similar"),   # contrast sets of prompts alike
    "DPO, RPO's effective β": dict(loss="dpo", beta="effective"),   # β × RPO τ=0.5's mean own-pair weight, per seed
    "RPO τ=0.5, whole batch": dict(loss="rpo", tau=0.5, contrast="whole"),   # the contrast batch is the optimizer step's
    "RPO τ=0.25": dict(loss="rpo", tau=0.25),
    "RPO τ=1": dict(loss="rpo", tau=1.0),
}
SCALES = {
    # batch: pairs per optimizer step; contrast: pairs per loss (RPO contrasts within it); train: pairs per seed
    # CPU: the paper's comparison, shorter texts (its ablations, the contrast batch and the τ sweep: --methods all)
    "cpu": dict(data="sample", train=160, test=256, judge_train=256, judge_epochs=1, samples=64, new_tokens=48, seeds=[0, 1, 2],
                batch=32, contrast=8, micro=8, lr=3e-4, judge_lr=3e-4, max_length=192, max_prompt_length=128,
                judge_max_length=512, methods=["DPO", "RPO τ=0.5", "RPO τ=0.5, similar sets", "DPO, RPO's effective β"]),
    "gpu": dict(data="hub", train=2048, test=512, judge_train=4096, judge_epochs=1, samples=128, new_tokens=128,
                seeds=[0, 1, 2, 3, 4], batch=64, contrast=64, micro=16, lr=1e-4, judge_lr=1e-4, max_length=512,
                max_prompt_length=256, judge_max_length=1024, methods=["DPO", "RPO τ=0.5", "RPO τ=1"]),   # contrast 64: the paper's
    "reduced": dict(data="sample", train=32, test=24, judge_train=32, judge_epochs=1, samples=6, new_tokens=8, seeds=[0, 1],
                    batch=16, contrast=8, micro=8, lr=3e-4, judge_lr=3e-4, max_length=160, max_prompt_length=96,
                    judge_max_length=512, methods=["DPO", "RPO τ=0.5", "RPO τ=0.5, similar sets", "DPO, RPO's effective β"]),
}
BOOTSTRAP = 4000
REWARD_BETA = 0.1   # every arm's margins in the same units: 0.1 × the policy/reference log-ratio difference (an arm's β may differ)


def write_pools(folder: Path, S: dict) -> dict:
    "Held-out pairs, a judge pool and a methods pool, disjoint by prompt, as JSON lines in TRL's format."
    from rpo_nb.sources import sample_path
    from rpo_nb.data import load_hh, prompt_text, split_by_prompt
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if S["data"] == "hub":   # the hub's train split for training, its test split held out
            train = load_hh("Anthropic/hh-rlhf", "train", data_dir="harmless-base")
            test = load_hh("Anthropic/hh-rlhf", "test", data_dir="harmless-base").shuffle(seed=0)
            held = {prompt_text(p) for p in test["prompt"]}
            train = train.filter(lambda r: prompt_text(r["prompt"]) not in held)   # disjoint by prompt, as the sample's split
        else:
            parts = split_by_prompt(load_hh(sample_path("hh")), 0.125, 0)
            train, test = parts["train"], parts["test"].shuffle(seed=0)
    test = test.select(range(S["test"]))   # exactly the held-out pairs: every method and seed scores all of them
    pools = split_by_prompt(train, 0.3, 1000)
    files = {}
    for name, ds in [("methods", pools["train"]), ("judge", pools["test"]), ("test", test)]:
        files[name] = folder / f"{name}.jsonl"
        files[name].write_text("\n".join(json.dumps({k: r[k] for k in ("prompt", "chosen", "rejected")}) for r in ds))
    return {k: str(v) for k, v in files.items()} | {f"{k}_pairs": len(ds) for k, ds in
                                                    [("methods", pools["train"]), ("judge", pools["test"]), ("test", test)]}


def run_dir(work: Path, seed: int, name: str) -> Path:
    "A method's output folder, its name made file-safe ('RPO τ=0.5, whole batch' -> seed0/RPO_tau0.5_whole_batch)."
    safe = name.replace(", ", "_").replace(" ", "_").replace("=", "").replace("τ", "tau")
    return work / f"seed{seed}" / ("sft" if name == "SFT" else safe)


def curve(folder: Path) -> list[dict]:
    keys = ("step", "loss", "rewards/margins", "rewards/accuracies", "eval/rewards/accuracies", "eval/rewards/margins",
            "contrast/own_pair_beta", "contrast/mean_cosine")   # the effective β and how alike a contrast set's prompts are
    return [{k: r[k] for k in keys if k in r} for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())]


def by_pool_order(margins: list[float], rows: list[int]) -> list[float]:
    "A run's per-pair margins (in its seed's shuffled order) put in the held-out pool's order, by source row."
    return [m for _, m in sorted(zip(rows, margins))]


def paired(a: list[list[float]], b: list[list[float]]) -> dict:
    "a − b per unit (pair or prompt) and seed: the mean over seeds and units, its bootstrap interval over units, each seed's."
    from rpo_nb.eval import bootstrap_interval
    d = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)   # [seeds, units]
    per_unit = d.mean(0)   # each unit's difference averaged over seeds: resampling units keeps a unit's seeds together
    lo, hi = bootstrap_interval(per_unit, n_resamples=BOOTSTRAP, seed=0)
    by_seed = d.mean(1).tolist()
    return {"diff": per_unit.mean().item(), "low": lo, "high": hi, "by_seed": by_seed,
            "seed_sd": statistics.stdev(by_seed) if len(by_seed) > 1 else 0.0, "units": d.shape[1], "seeds": d.shape[0]}


def effective_beta(cfg, tok) -> float:
    "β times the mean own-pair weight W_ii over the contrast sets an RPO run of `cfg` trains on (as its log's own-pair β)."
    from rpo_nb.config import run_data
    from rpo_nb.embeddings import distance_weights, embed_prompts
    from rpo_nb.scoring import make_items
    from rpo_nb.stage import _epoch_batches
    items = make_items(run_data(cfg, tok)["train"], "paired", cfg.embed_prompt)
    emb = embed_prompts(items.prompts, cfg.embedder, cache_dir=Path(cfg.cache_dir) / "embeddings")
    sets = _epoch_batches(cfg, items, cfg.contrast_batch_size, 0, emb)
    used = sets[:len(sets) // cfg.gradient_accumulation_steps * cfg.gradient_accumulation_steps]   # the one epoch's steps
    return cfg.beta * statistics.mean(distance_weights(emb[b], emb[b], cfg.tau).diagonal().mean().item() for b in used)


def git_commit() -> str:
    "HEAD's commit, marked '+changes' when the working tree differs from it."
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "rpo_nb", "study/rpo_vs_dpo.py"],
                           capture_output=True, text=True).stdout.strip()
    return head + ("+changes" if dirty else "")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=list(SCALES), default="cpu")
    p.add_argument("--reduced", action="store_true", help="the same as --scale reduced")
    p.add_argument("--methods", default=None, help="comma-separated method names, or 'all' (default: the scale's)")
    p.add_argument("--work", default=None, help="folder for runs, kept; run again with the same folder to resume "
                   "(finished runs are skipped). Default: a temporary folder, removed at the end")
    p.add_argument("--reuse", default=None, help="an earlier results file of the same scale whose runs of --reuse_methods are "
                   "taken instead of run (their code path must be bit-identical: check it first); SFT and the judge are retrained")
    p.add_argument("--reuse_methods", default="", help="comma-separated method names to take from --reuse")
    a = p.parse_args()
    scale = "reduced" if a.reduced else a.scale
    S = dict(SCALES[scale])
    if a.methods: S["methods"] = list(METHODS) if a.methods == "all" else [m.strip() for m in a.methods.split(",")]
    unknown = [m for m in S["methods"] if m not in METHODS]
    if unknown or "DPO" not in S["methods"]: sys.exit(f"--methods: {unknown or 'DPO'} {'unknown' if unknown else 'is needed'}; known: {list(METHODS)}")
    if scale == "gpu" and not torch.cuda.is_available():
        sys.exit("--scale gpu needs a CUDA GPU; on a CPU, run the default scale")
    warnings.simplefilter("ignore")
    from rpo_nb.sources import load_tokenizer
    from rpo_nb.data import answer_text, prompt_text
    from rpo_nb.config import load_config, run_data
    from rpo_nb.eval import load_trained, run_report, sample_answers
    from rpo_nb.judges import ImplicitRewardJudge, win_rate
    from rpo_nb.cli import run
    t_start, minutes, commit = time.time(), {}, git_commit()   # the code as it starts: later edits don't relabel the run
    work = Path(a.work) if a.work else Path(__import__("tempfile").mkdtemp(prefix="rpo_study_"))
    work.mkdir(parents=True, exist_ok=True)
    pools = write_pools(work, S)
    common = dict(model=MODEL, dataset="trl", test_path=pools["test"], max_test_items=S["test"], max_length=S["max_length"],
                  max_prompt_length=S["max_prompt_length"], micro_batch_size=S["micro"], gradient_checkpointing=False,
                  lora_dropout=0.0, eval_batch_size=16, warmup_steps=2, save_steps=10 ** 6, progress=False, plots=False,
                  group_by_length=False,   # every method's steps hold the same pairs (DPO would length-group them)
                  quantization="none", dtype="bfloat16" if torch.cuda.is_available() else "float32",   # the same model as on a CPU
                  cache_dir=str(work / "cache"), beta=0.1, learning_rate=S["lr"])
    batch = lambda contrast: dict(contrast_batch_size=contrast, gradient_accumulation_steps=S["batch"] // contrast)
    tok = load_tokenizer(MODEL)
    old = json.loads(Path(a.reuse).read_text()) if a.reuse else None
    reuse = [m.strip() for m in a.reuse_methods.split(",") if m.strip()]
    if old is not None:
        differ = {k: (old["meta"].get(k), S[k]) for k in S if k != "methods" and old["meta"].get(k) != S[k]}
        if differ or any(m not in old["runs"] for m in reuse): sys.exit(f"--reuse: another scale or no such runs ({differ})")
    log = lambda *m: print(f"[{(time.time() - t_start) / 60:6.1f} min]", *m, flush=True)
    lap = lambda key, t0: minutes.__setitem__(key, minutes.get(key, 0.0) + (time.time() - t0) / 60)

    # the judge: DPO on the judge pool, from the base model; its held-out accuracy says how far to trust it
    t0 = time.time()
    judge_dir = work / "judge"
    judge_reused = (judge_dir / "done.json").exists()   # finished in --work by an earlier start: its minutes are not in this run's
    run(load_config(**dict(common, **batch(S["contrast"]), data_path=pools["judge"],
                           max_train_items=S["judge_train"], loss="dpo", learning_rate=S["judge_lr"],
                           num_epochs=float(S["judge_epochs"]), output_dir=str(judge_dir), seed=0)), resume=True)
    judge_report = run_report(judge_dir)["after"]
    # the judge reads whole answers: an answer cut to its max_length gets no verdict, so it reads longer texts than training
    judge = ImplicitRewardJudge(MODEL, judge_dir / "adapter", beta=0.1, max_length=S["judge_max_length"],
                                max_prompt_length=S["judge_max_length"] // 2, batch_size=8)
    lap("judge", t0)
    log(f"judge held-out accuracy {judge_report['accuracy']:.3f}")

    # the held-out pool in file order: per-pair margins are put in it, and the sampled prompts are its first ones
    pool = [json.loads(l) for l in Path(pools["test"]).read_text().splitlines()]
    prompts, chosen = [r["prompt"] for r in pool[:S["samples"]]], [answer_text(r["chosen"]) for r in pool[:S["samples"]]]
    chosen_tokens = [len(tok(c, add_special_tokens=False)["input_ids"]) for c in chosen]
    names = ["SFT"] + S["methods"]
    runs, reused = {name: {} for name in names}, []
    for seed in S["seeds"]:
        base = dict(common, **batch(S["contrast"]), data_path=pools["methods"], max_train_items=S["train"], seed=seed,
                    num_epochs=1.0)
        test_rows = list(run_data(load_config(**base), tok)["test"]["row"])   # this seed's held-out order, by pool row
        for name in names:
            if name in reuse:   # an earlier run of the same code path (checked before): its results as recorded
                runs[name][str(seed)] = old["runs"][name][str(seed)]
                log(f"seed {seed}: {name:24s} taken from {a.reuse}")
                continue
            t0, d = time.time(), run_dir(work, seed, name)
            if name == "SFT": cfg = load_config(**dict(base, stage="sft", output_dir=str(d)))
            else:
                over = dict(METHODS[name])
                if over.pop("contrast", None) == "whole": over |= batch(S["batch"])
                if over.get("beta") == "effective":   # RPO τ=0.5's own-pair β on this seed's pairs and contrast sets
                    over["beta"] = effective_beta(load_config(**dict(base, **METHODS["RPO τ=0.5"])), tok)
                cfg = load_config(**dict(base, **over, sft_adapter=str(run_dir(work, seed, "SFT") / "adapter"), output_dir=str(d)))
            if (d / "done.json").exists(): reused.append(str(d.relative_to(work)))   # finished in --work before this start
            run(cfg, resume=True)
            lap("train", t0)
            done = json.loads((d / "done.json").read_text())
            assert len(done["spread_after"]) == len(test_rows) == S["test"], (name, seed, len(done["spread_after"]), len(test_rows))
            rep, k = run_report(d), REWARD_BETA / cfg.beta   # margins at the common β, whatever the arm trained with
            after = {**rep["after"], **{m: rep["after"][m] * k for m in ("margin", "margin_low", "margin_high")}}
            r = runs[name][str(seed)] = {"after": after, "curve": curve(d), "steps": done["steps"], "speed": done["speed"],
                                        "margins": [m * k for m in by_pool_order(done["spread_after"], test_rows)], "beta": cfg.beta}
            # answers for the same held-out prompts, every method and seed, judged against the chosen answers
            t0, cache = time.time(), d / "samples.json"
            if cache.exists():
                s = json.loads(cache.read_text())
                reused.append(str(cache.relative_to(work)))
            else:
                model = load_trained(MODEL, d / "adapter", common["quantization"], dtype=common["dtype"])   # as it trained
                answers = sample_answers(model, tok, prompts, max_new_tokens=S["new_tokens"], batch_size=16, seed=seed,
                                         max_prompt_length=S["max_prompt_length"], max_length=S["max_prompt_length"] + S["new_tokens"])
                del model
                s = {"answers": answers, "verdicts": judge(prompts, answers, chosen)}
                cache.write_text(json.dumps(s))
            lap("samples", t0)
            r["verdicts"], r["win"] = s["verdicts"], win_rate(s["verdicts"])
            r["answer_tokens"] = [len(tok(x, add_special_tokens=False)["input_ids"]) for x in s["answers"]]
            r["examples"] = [{"prompt": prompt_text(p)[-300:], "chosen": c, "answer": x, "verdict": v}
                             for p, c, x, v in list(zip(prompts, chosen, s["answers"], s["verdicts"]))[:3]]
            log(f"seed {seed}: {name:24s} held-out accuracy {after['accuracy']:.3f}, margin {after['margin']:+.4f}, "
                f"win rate {r['win']['win_rate']:.3f}")

    # per method: pooled over seeds; against DPO: paired by held-out pair (accuracy, margin) and by prompt (win)
    seeds = [str(s) for s in S["seeds"]]
    won = lambda name: [[float(v == "win") for v in runs[name][s]["verdicts"]] for s in seeds]
    right = lambda name: [[float(m > 0) for m in runs[name][s]["margins"]] for s in seeds]
    margin = lambda name: [runs[name][s]["margins"] for s in seeds]
    summary = {}
    for name in names:
        rs = [runs[name][s] for s in seeds]
        verdicts = [v for r in rs for v in r["verdicts"]]
        accs = [r["after"]["accuracy"] for r in rs]
        summary[name] = {"accuracy": statistics.mean(accs), "accuracy_by_seed": accs,
                         "margin": statistics.mean(r["after"]["margin"] for r in rs), "margin_by_seed": [r["after"]["margin"] for r in rs],
                         "win_by_seed": [r["win"]["win_rate"] for r in rs], **{f"win_{k}": v for k, v in win_rate(verdicts).items()},
                         "answer_tokens": statistics.mean(t for r in rs for t in r["answer_tokens"])}
    against = lambda name, base: {"accuracy": paired(right(name), right(base)), "margin": paired(margin(name), margin(base)),
                                  "win_rate": paired(won(name), won(base))}
    versus = {name: against(name, "DPO") for name in names if name != "DPO"}
    versus_rpo = {name: against(name, "RPO τ=0.5") for name in names if name not in ("RPO τ=0.5", "SFT") and "RPO τ=0.5" in names}
    reuse_check = ({"sft_margin_max_abs_diff": {s: max(abs(x - y) for x, y in zip(runs["SFT"][s]["margins"], old["runs"]["SFT"][s]["margins"]))
                                                for s in seeds},
                    "judge_accuracy": [judge_report["accuracy"], old["judge"]["accuracy"]]} if old is not None else None)
    # does the judge prefer longer answers? wins among answers longer than the chosen one, and among the others
    longer = [(v == "win") for n in names for s in seeds for v, t, c in
              zip(runs[n][s]["verdicts"], runs[n][s]["answer_tokens"], chosen_tokens) if t > c and v is not None]
    shorter = [(v == "win") for n in names for s in seeds for v, t, c in
               zip(runs[n][s]["verdicts"], runs[n][s]["answer_tokens"], chosen_tokens) if t <= c and v is not None]
    lengths = {"chosen_tokens": statistics.mean(chosen_tokens), "new_tokens_cap": S["new_tokens"],
               "win_rate_when_longer": sum(longer) / len(longer) if longer else None, "n_longer": len(longer),
               "win_rate_when_not_longer": sum(shorter) / len(shorter) if shorter else None, "n_not_longer": len(shorter)}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    meta = {"scale": scale, **S, "model": MODEL, "commit": commit, "methods_settings": {k: METHODS[k] for k in S["methods"]},
            "pools": {k: (Path(v).name if isinstance(v, str) else v) for k, v in pools.items()}, "bootstrap_resamples": BOOTSTRAP,
            "minutes": (time.time() - t_start) / 60, "minutes_by_phase": minutes, "judge_reused": judge_reused,
            "reused": reused, "reused_from": {"file": Path(a.reuse).name, "commit": old["meta"]["commit"], "methods": reuse,
                                                "check": reuse_check} if old is not None else None, "peak_rss_mb": peak_mb,
            "peak_gpu_mb": max((r["speed"].get("peak_allocated_mb") or 0 for n in names for r in runs[n].values()), default=0) or None,
            "date": time.strftime("%Y-%m-%d"),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores ({platform.machine()})",
            "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "common": {k: v for k, v in common.items() if k not in ("test_path", "cache_dir")}}
    out = ROOT / "study" / {"cpu": "results.json", "gpu": "results_gpu.json", "reduced": "results_reduced.json"}[scale]
    out.write_text(json.dumps({"meta": meta, "judge": judge_report, "summary": summary, "versus_dpo": versus, "versus_rpo": versus_rpo,
                               "lengths": lengths, "runs": runs}, indent=1))
    log("wrote", out)
    if not a.work: shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__": main()
