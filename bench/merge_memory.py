"""Merging an adapter (`rpo_train --merge`): peak memory against the model's bf16 size, and how the merged weights
differ from the 4-bit model that was trained.

    python bench/merge_memory.py                                   # SmolLM2-135M-Instruct (offline copy), ~1 min
    python bench/merge_memory.py --model rpo-nb/tiny-random-llama  # seconds: checks the script

A LoRA adapter with random B (as if trained) is saved; a fresh process merges it with `merge_adapter` (base loaded
straight in bf16 on the CPU) and reports its peak resident memory growth. Then, per linear layer, the relative
RMS difference between the merged bf16 weight and what training computed with: the NF4-dequantised base weight
plus the same LoRA delta. Writes bench/results/merge_memory.json and .md.
"""
import argparse, json, os, sys, warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import HERE, Timer, peak_resident_mb, resident_mb, run_worker


def merge_worker(a) -> dict:
    warnings.simplefilter("ignore")
    from rpo_nb.sources import load_tokenizer
    from rpo_nb.config import load_config
    from rpo_nb.merge import merge_adapter
    tmp = Path(os.environ["RPO_NB_BENCH_TMP"])
    tok = load_tokenizer(a.model)
    cfg = load_config(model=a.model)
    import threading, time
    anon = lambda: int(open("/proc/self/status").read().split("RssAnon:")[1].split()[0]) / 1024
    base = resident_mb()   # the merge runs on the CPU, on a GPU machine too: resident memory, not CUDA's
    base_anon, peak_anon, done = anon(), [anon()], threading.Event()
    def sample():   # private (anonymous) memory, sampled: the resident total also counts the checkpoint's mapped pages
        while not done.is_set(): peak_anon[0] = max(peak_anon[0], anon()); time.sleep(0.005)
    th = threading.Thread(target=sample); th.start()
    with Timer() as t: merge_adapter(cfg, Path(a.adapter), tmp / "merged", tok)
    done.set(); th.join()
    peak = peak_resident_mb()
    import transformers
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp / "merged", dtype="auto")
    return {"peak_growth_mb": peak - base, "peak_anon_growth_mb": peak_anon[0] - base_anon, "seconds": t.seconds, "merged_dtype": str(merged.dtype),
            "n_params": merged.num_parameters(), "bf16_size_mb": merged.num_parameters() * 2 / 2**20,
            "merged_path": str(tmp / "merged")}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--out_dir", default=str(HERE / "results"))
    p.add_argument("--worker", action="store_true"); p.add_argument("--adapter"); p.add_argument("--result")
    a = p.parse_args()
    if a.worker:
        Path(a.result).write_text(json.dumps(merge_worker(a))); return
    import tempfile, torch
    import bitsandbytes.functional as bnbf
    from rpo_nb.model import add_lora, load_model
    warnings.simplefilter("ignore")
    d = Path(tempfile.mkdtemp())
    from rpo_nb.sources import load_tokenizer
    # the base as hub checkpoints ship it: bf16 safetensors (the offline SmolLM2 copy is stored in float32)
    load_model(a.model, quantization="none", dtype="bfloat16", device="cpu").save_pretrained(d / "base")
    load_tokenizer(a.model).save_pretrained(d / "base")
    model = str(d / "base")
    torch.manual_seed(0)
    policy = add_lora(load_model(model, quantization="none", dtype="float32", device="cpu"), gradient_checkpointing=False)
    with torch.no_grad():
        for n, w in policy.named_parameters():
            if "lora_B" in n: w.normal_(0, 0.01)
    policy.save_pretrained(d / "adapter")
    res = run_worker(Path(__file__), ["--model", model, "--worker", "--adapter", str(d / "adapter")])
    # merged bf16 vs (NF4-dequantised base + delta), the weights training computed with, layer by layer
    base = {n.removeprefix("base_model.model.").replace(".base_layer", ""): w.detach().clone()
            for n, w in policy.named_parameters() if ".base_layer.weight" in n}
    merged = dict(policy.merge_and_unload().named_parameters())
    errs, errs_bf16 = [], []
    for name, w0 in base.items():
        exact = merged[name].detach().float()            # base + delta, full precision
        q, state = bnbf.quantize_4bit(w0.float().contiguous(), quant_type="nf4", blocksize=64)
        trained = bnbf.dequantize_4bit(q, state).float() + (exact - w0)   # what training computed with
        rel = lambda x: float((x - exact).pow(2).mean().sqrt() / exact.pow(2).mean().sqrt())
        errs.append(rel(trained)); errs_bf16.append(rel(exact.to(torch.bfloat16).float()))
    import statistics
    res.update({"model": a.model, "layers": len(errs), "nf4_rel_rms_median": statistics.median(errs),
                "bf16_rel_rms_median": statistics.median(errs_bf16)})
    out = Path(a.out_dir); out.mkdir(parents=True, exist_ok=True)
    (out / "merge_memory.json").write_text(json.dumps(res, indent=1))
    md = (f"Merging a LoRA adapter into `{a.model}` ({res['n_params'] / 1e6:.1f}M parameters) with `rpo_train --merge`: "
          f"the base loads straight in bf16 on the CPU; peak private memory growth {res['peak_anon_growth_mb']:.0f} MB against a "
          f"bf16 size of {res['bf16_size_mb']:.0f} MB ({res['peak_anon_growth_mb'] / res['bf16_size_mb']:.2f}×; resident "
          f"{res['peak_growth_mb']:.0f} MB, which also counts the memory-mapped checkpoint's pages), {res['seconds']:.1f} s; "
          f"merged weights saved as {res['merged_dtype']}.\n\nThe merged model is the *unquantised* base plus the LoRA delta; "
          f"training computed with the NF4-rounded base plus the same delta. Per linear layer (median over {res['layers']}), "
          f"the NF4 rounding moves a weight matrix by {res['nf4_rel_rms_median']:.1%} of its RMS, and storing in bf16 by "
          f"{res['bf16_rel_rms_median']:.2%}: the merged model is slightly closer to the full-precision base than the model "
          f"that was trained was, so its outputs differ from the trained policy's by about the quantisation error.\n")
    (out / "merge_memory.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
