"""Summed log-probs out of an FSDP2 policy under bf16 mixed precision, with rpo_nb's FSDP settings or with accelerate's
default policy (`--default`): prints the output dtype and the first log-prob next to a float32 pass. Launched by
tests/test_parallel.py under `accelerate launch` with the FSDP config (CPU processes, marked as a GPU group)."""
import json, sys, warnings

import torch
from accelerate.state import PartialState
from accelerate.utils import DistributedType

PartialState(cpu=True)._shared_state["distributed_type"] = DistributedType.MULTI_GPU
warnings.simplefilter("ignore")
from accelerate import Accelerator
from rpo_nb.sources import TINY_MODEL, load_tokenizer
from rpo_nb.batches import pad_token_id
from rpo_nb.logprobs import build_policy
from rpo_nb.config import load_config, run_data
from rpo_nb.scoring import make_items
from rpo_nb.step import micro_batches
from rpo_nb.stage import _fsdp_settings

acc = Accelerator(cpu=True, mixed_precision="bf16")
cfg = load_config("tiny", max_train_items=8, max_test_items=4)
tok = load_tokenizer(TINY_MODEL)
items = make_items(run_data(cfg, tok)["train"], "paired")
batch = micro_batches(items, [0, 1], 2, pad_token_id(tok))[0][0]
policy = build_policy(TINY_MODEL, "none", "float32", "cpu", dropout=0.0).eval()
with torch.no_grad(): plain = policy(**batch)[0]
if "--default" not in sys.argv: _fsdp_settings(cfg, acc)
opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad])
policy, opt = acc.prepare(policy, opt)
with torch.no_grad(): out = policy(**batch)[0]
if acc.is_main_process: print(json.dumps({"dtype": str(out.dtype), "fsdp": out[0].item(), "float32": plain[0].item()}))
