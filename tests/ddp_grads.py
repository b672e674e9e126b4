"""One contrast step on the tiny model per loss, in one process or under `accelerate launch`; saves the averaged
LoRA gradients. Run by tests/test_distributed.py.

With N processes each holds `batch // N` items of the same global batch. `--per_device` contrasts each process's
slice alone (global_contrast=False); `--halves` (one process) computes the gradients of the batch's two halves
separately, which is what two per-device processes should average to.
"""
import argparse, warnings
import torch
from accelerate import Accelerator
from rpo_nb.sources import TINY_MODEL, load_tokenizer
from rpo_nb.batches import pad_token_id
from rpo_nb.embeddings import embed_prompts
from rpo_nb.logprobs import build_policy
from rpo_nb.config import load_config, run_data
from rpo_nb.scoring import make_items
from rpo_nb.step import batch_loss, contrast_step, kto_reference_point, micro_batches

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--losses", default="rpo,rpo_unpaired,dpo,kto")
p.add_argument("--batch", type=int, default=8)       # global contrast batch
p.add_argument("--micro", type=int, default=2)
p.add_argument("--per_device", action="store_true")
p.add_argument("--halves", action="store_true")
args = p.parse_args()
warnings.simplefilter("ignore")

acc = Accelerator(cpu=True)
tok = load_tokenizer(TINY_MODEL)
torch.manual_seed(0)
policy = build_policy(TINY_MODEL, "none", torch.float64, "cpu", r=8, alpha=16, dropout=0.0, gradient_checkpointing=False)
with torch.no_grad():
    for n, w in policy.named_parameters():
        if "lora_B" in n: w.normal_(0, 0.05)
policy = acc.prepare(policy)


def step(loss: str, idx: list[int], global_contrast: bool) -> dict:
    "LoRA gradients (averaged over processes) and the loss of one contrast step over `idx`."
    cfg = load_config(model=TINY_MODEL, loss=loss, max_length=128, max_prompt_length=96, max_train_items=32, max_test_items=8,
                      global_contrast=global_contrast)
    items = make_items(run_data(cfg, tok)["train"], "unpaired" if loss in ("rpo_unpaired", "kto") else "paired")
    emb = embed_prompts(items.prompts).double() if loss.startswith("rpo") else None
    reference = torch.linspace(-80, -20, len(items) * (2 if items.paired else 1), dtype=torch.float64).reshape(len(items), -1)
    B = len(idx) // acc.num_processes
    local = idx[acc.process_index * B:(acc.process_index + 1) * B]
    loss_idx = idx if global_contrast else local
    acc.unwrap_model(policy).zero_grad()
    mbs, pos = micro_batches(items, local, args.micro, pad_token_id(tok))
    # KTO's reference point from mismatched pairs of the global batch, gathered over the processes
    z = kto_reference_point(policy, items, idx, cfg, pad_token_id(tok), acc) if loss == "kto" else None
    out = contrast_step(policy, mbs, pos, lambda lp: batch_loss(cfg, lp, loss_idx, items, reference, emb, None, z), acc,
                        global_contrast)
    return {"grads": {n: w.grad.detach().clone() for n, w in acc.unwrap_model(policy).named_parameters() if w.requires_grad},
            "loss": float(out["loss"])}


batch = list(range(args.batch))
saved = {"world": acc.num_processes}
for loss in args.losses.split(","):
    saved[loss] = step(loss, batch, not args.per_device)
    if args.halves:
        saved[loss + "/halves"] = [step(loss, batch[:args.batch // 2], True), step(loss, batch[args.batch // 2:], True)]
if acc.is_main_process: torch.save(saved, args.out)
acc.wait_for_everyone()
