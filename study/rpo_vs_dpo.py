"""Does RPO beat DPO here? A small study on real data (HH harmless sample, SmolLM2-135M-Instruct, LoRA, CPU).

    python study/rpo_vs_dpo.py                 # the full study (about 1-1.5 hours on 2 CPU cores) -> study/results.json
    python study/rpo_vs_dpo.py --reduced       # a few minutes: the same pipeline at toy scale -> study/results_reduced.json

Per seed: SFT on the chosen answers, then every method from the SFT adapter (which is also its reference) with
the same training pairs, 32 pairs per optimizer step, the same steps, learning rate and seed; held-out
implicit-reward accuracy and margins; sampled answers for held-out prompts. A judge (a DPO-trained SmolLM2 used
as a reward model through its implicit reward, trained on a disjoint pool of HH pairs, its own held-out
accuracy reported) compares each sample with the data set's chosen answer. Chapter 08 reads the results file.
"""
import argparse, json, os, platform, shutil, statistics, sys, time, warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# every preference method: 32 pairs per optimizer step; the loss sees 8 (4 contrast batches accumulated) or 32
METHODS = {
    "DPO": dict(loss="dpo"),
    "IPO": dict(loss="ipo"),
    "RPO τ=0.25": dict(loss="rpo", tau=0.25),
    "RPO τ=0.5": dict(loss="rpo", tau=0.5),
    "RPO τ=0.75": dict(loss="rpo", tau=0.75),
    "RPO-diagonal": dict(loss="rpo_diagonal"),
    "RPO unpaired": dict(loss="rpo_unpaired"),
    "RPO τ=0.5, B=32": dict(loss="rpo", tau=0.5, contrast_batch_size=32, gradient_accumulation_steps=1),
}
SCALES = {
    "full": dict(train=160, test=128, judge_train=256, samples=24, new_tokens=40, seeds=[0], lr=3e-4, judge_lr=3e-4),
    "reduced": dict(train=64, test=16, judge_train=64, samples=4, new_tokens=16, seeds=[0], lr=3e-4, judge_lr=3e-4),
}


def write_pools(folder: Path, seed: int = 0) -> dict:
    "Held-out pairs (the usual 10% split by prompt), and the rest divided by prompt into a methods pool and a judge pool."
    from rpo_nb.sources import sample_path
    from rpo_nb.data import load_hh, split_by_prompt
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hh = load_hh(sample_path("hh"))
    first = split_by_prompt(hh, 0.1, seed)
    pools = split_by_prompt(first["train"], 0.3, seed + 1000)
    files = {}
    for name, ds in [("methods", pools["train"]), ("judge", pools["test"]), ("test", first["test"])]:
        files[name] = folder / f"{name}.jsonl"
        files[name].write_text("\n".join(json.dumps({k: r[k] for k in ("prompt", "chosen", "rejected")}) for r in ds))
    return {k: str(v) for k, v in files.items()}


def run_dir(work: Path, seed: int, name: str) -> Path:
    "A method's output folder, its name made file-safe ('RPO τ=0.5, B=32' -> seed0/RPO_tau0.5_B32)."
    return work / f"seed{seed}" / ("sft" if name == "SFT" else name.replace(" ", "_").replace("=", "").replace(",", "").replace("τ", "tau"))


def curve(folder: Path) -> list[dict]:
    keys = ("step", "loss", "rewards/margins", "rewards/accuracies", "eval/rewards/accuracies", "eval/rewards/margins")
    return [{k: r[k] for k in keys if k in r} for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reduced", action="store_true")
    p.add_argument("--work", default=None, help="folder for runs, kept; run again with the same folder to resume "
                   "(finished runs are skipped). Default: a temporary folder, removed at the end")
    a = p.parse_args()
    scale_name = "reduced" if a.reduced else "full"
    S = SCALES[scale_name]
    warnings.simplefilter("ignore")
    from rpo_nb.sources import load_tokenizer
    from rpo_nb.data import answer_text, prompt_text
    from rpo_nb.eval import ImplicitRewardJudge, load_trained, run_report, sample_answers, wilson_interval, win_rate
    from rpo_nb.config import load_config, run_data
    from rpo_nb.cli import run
    t_start = time.time()
    work = Path(a.work) if a.work else Path(__import__("tempfile").mkdtemp(prefix="rpo_study_"))
    work.mkdir(parents=True, exist_ok=True)
    pools = write_pools(work)
    common = dict(model=MODEL, dataset="trl", test_path=pools["test"], max_test_items=S["test"], max_length=256,
                  max_prompt_length=160, micro_batch_size=8, contrast_batch_size=8, gradient_accumulation_steps=4,
                  gradient_checkpointing=False, lora_dropout=0.0, eval_batch_size=16, warmup_steps=2, save_steps=10 ** 6,
                  progress=False, plots=False, cache_dir=str(work / "cache"), beta=0.1, learning_rate=S["lr"])
    tok = load_tokenizer(MODEL)
    log = lambda *m: print(f"[{(time.time() - t_start) / 60:6.1f} min]", *m, flush=True)

    # the judge: DPO on the judge pool, from the base model; its held-out accuracy says how far to trust it
    judge_dir = work / "judge"
    run(load_config(**dict(common, data_path=pools["judge"], max_train_items=S["judge_train"], loss="dpo",
                           learning_rate=S["judge_lr"], num_epochs=1.0, output_dir=str(judge_dir), seed=0)), resume=True)
    judge_report = run_report(judge_dir)["after"]
    judge = ImplicitRewardJudge(MODEL, judge_dir / "adapter", beta=0.1, max_length=256, max_prompt_length=160, batch_size=16)
    log("judge held-out accuracy", judge_report["accuracy"])

    results = {name: {} for name in ["SFT"] + list(METHODS)}
    for seed in S["seeds"]:
        base = dict(common, data_path=pools["methods"], max_train_items=S["train"], seed=seed, num_epochs=1.0)
        sft_dir = run_dir(work, seed, "SFT")
        run(load_config(**dict(base, stage="sft", output_dir=str(sft_dir))), resume=True)
        results["SFT"][seed] = {"after": run_report(sft_dir)["after"], "curve": curve(sft_dir)}
        log(f"seed {seed}: SFT done")
        for name, over in METHODS.items():
            d = run_dir(work, seed, name)
            run(load_config(**dict(base, **over, sft_adapter=str(sft_dir / "adapter"), output_dir=str(d))), resume=True)
            rep = run_report(d)
            results[name][seed] = {"before": rep["before"], "after": rep["after"], "curve": curve(d)}
            log(f"seed {seed}: {name} accuracy {rep['after']['accuracy']:.3f}")
        # samples for the first held-out prompts, every method, scored by the judge against the chosen answers
        test = run_data(load_config(**base), tok)["test"].select(range(S["samples"]))
        prompts, chosen = list(test["prompt"]), [answer_text(c) for c in test["chosen"]]
        for name in results:
            d = run_dir(work, seed, name)
            model = load_trained(MODEL, d / "adapter")
            answers = sample_answers(model, tok, prompts, max_new_tokens=S["new_tokens"], batch_size=8, seed=seed)
            verdicts = judge(prompts, answers, chosen)
            results[name][seed]["win"] = win_rate(verdicts)
            results[name][seed]["examples"] = [{"prompt": prompt_text(p)[-300:], "chosen": c, "answer": x, "verdict": v}
                                               for p, c, x, v in list(zip(prompts, chosen, answers, verdicts))[:3]]
            log(f"seed {seed}: {name} win rate {results[name][seed]['win']['win_rate']:.3f}")

    summary = {}
    for name, per_seed in results.items():
        accs = [r["after"]["accuracy"] for r in per_seed.values()]
        n = sum(r["after"]["n"] for r in per_seed.values()); k = sum(r["after"]["accuracy"] * r["after"]["n"] for r in per_seed.values())
        margins = [r["after"]["margin"] for r in per_seed.values()]
        wins = [v for r in per_seed.values() for v in (["win"] * r["win"]["wins"] + ["loss"] * r["win"]["losses"] +
                                                       ["tie"] * r["win"]["ties"] + [None] * r["win"]["no_verdict"])]
        lo, hi = wilson_interval(k, n)
        summary[name] = {"accuracy": k / n, "accuracy_low": lo, "accuracy_high": hi, "accuracy_by_seed": accs,
                         "margin": statistics.mean(margins), "margin_by_seed": margins, **{f"win_{x}": y for x, y in win_rate(wins).items()}}
    meta = {"scale": scale_name, **S, "model": MODEL, "methods": {k: v for k, v in METHODS.items()}, "pools": {k: Path(v).name for k, v in pools.items()},
            "minutes": (time.time() - t_start) / 60, "date": time.strftime("%Y-%m-%d"),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores ({platform.machine()})",
            "torch": torch.__version__, "common": {k: v for k, v in common.items() if k not in ("test_path", "cache_dir")}}
    out = ROOT / "study" / ("results.json" if scale_name == "full" else "results_reduced.json")
    out.write_text(json.dumps({"meta": meta, "judge": judge_report, "summary": summary, "runs": results}, indent=1))
    log("wrote", out)
    if not a.work: shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__": main()
