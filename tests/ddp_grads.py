"""One contrast step on the tiny model, in one process or under `accelerate launch`; saves the averaged LoRA gradients.

Run by tests/test_distributed.py. With N processes each holds `batch // N` items of the same global batch.
"""
import argparse, warnings
import torch
from accelerate import Accelerator
from rpo_nb.data import TINY_MODEL, load_tokenizer, pad_token_id
from rpo_nb.embeddings import embed_prompts
from rpo_nb.model import SequenceLogProbs, add_lora, load_model
from rpo_nb.train import batch_loss, contrast_step, load_config, make_items, micro_batches, run_data

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--loss", default="rpo")
p.add_argument("--batch", type=int, default=8)       # global contrast batch
p.add_argument("--micro", type=int, default=2)
p.add_argument("--per_device", action="store_true")  # global_contrast=False
p.add_argument("--items", default="")                # comma-separated item indices (default: range(batch))
args = p.parse_args()
warnings.simplefilter("ignore")

acc = Accelerator(cpu=True)
cfg = load_config(model=TINY_MODEL, loss=args.loss, max_length=128, max_prompt_length=96, max_train_items=32, max_test_items=8,
                  global_contrast=not args.per_device)
tok = load_tokenizer(TINY_MODEL)
data = run_data(cfg, tok)
kind = "unpaired" if args.loss in ("rpo_unpaired", "kto") else "paired"
items = make_items(data["train"], kind)
emb = embed_prompts(items.prompts).double() if args.loss in ("rpo", "rpo_unpaired") else None
reference = torch.linspace(-80, -20, len(items) * (2 if items.paired else 1), dtype=torch.float64).reshape(len(items), -1)

torch.manual_seed(0)
policy = SequenceLogProbs(add_lora(load_model(TINY_MODEL, dtype=torch.float64), r=8, alpha=16, dropout=0.0,
                                   gradient_checkpointing=False))
with torch.no_grad():
    for n, w in policy.named_parameters():
        if "lora_B" in n: w.normal_(0, 0.05)
policy = acc.prepare(policy)

idx = [int(i) for i in args.items.split(",")] if args.items else list(range(args.batch))
B = len(idx) // acc.num_processes
local = idx[acc.process_index * B:(acc.process_index + 1) * B]
loss_idx = idx if cfg.global_contrast else local
mbs, pos = micro_batches(items, local, args.micro, pad_token_id(tok), device=acc.device)
out = contrast_step(policy, mbs, pos, lambda lp: batch_loss(cfg, lp, loss_idx, items, reference, emb), acc, cfg.global_contrast)
grads = {n: w.grad.detach().clone() for n, w in acc.unwrap_model(policy).named_parameters() if w.requires_grad}
if acc.is_main_process: torch.save({"grads": grads, "loss": out["loss"], "world": acc.num_processes}, args.out)
acc.wait_for_everyone()
