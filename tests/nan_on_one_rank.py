"""`rpo_train` whose loss is NaN on the last process only, at its second contrast batch (for the no-hang test).
With NAN_FP16_SCALER=1 each process trains under fp16 autocast with a real GradScaler on the CPU (accelerate makes one
only on GPUs), starting at 1024: the per-process-contrast test reads the scale every step."""
import os, sys

import torch
import rpo_nb.cli as cli
import rpo_nb.train as T

real, calls = T.batch_loss, []


def nan_on_last_rank(*a, **k):
    from accelerate import PartialState
    loss, m = real(*a, **k)
    calls.append(1)
    state = PartialState()
    if len(calls) == 2 and state.process_index == state.num_processes - 1: loss = loss * float("nan")
    return loss, m


def fp16_accelerator(cfg):
    from accelerate import Accelerator
    acc = Accelerator(cpu=True, mixed_precision="fp16")
    acc.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    acc.native_amp = True
    return acc


T.batch_loss = nan_on_last_rank
if os.environ.get("NAN_FP16_SCALER") == "1": cli.make_accelerator = fp16_accelerator
cli.main(sys.argv[1:])
