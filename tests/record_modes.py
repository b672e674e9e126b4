"""`rpo_train` (same arguments) with every decoder-layer forward recorded: inside a training step or not, training mode,
gradients on, checkpointing engaged. One JSON line per forward, appended to $RPO_NB_MODE_LOG as it happens (a killed
run keeps what it logged). Run by tests/test_resume.py."""
import json, os, sys

import torch
import rpo_nb.cli as cli
import rpo_nb.stage as stage
import rpo_nb.train as train

log = open(os.environ["RPO_NB_MODE_LOG"], "a", buffering=1)
state = {"in_step": False, "checkpointed": 0}
real_build_policy, real_contrast_step = stage.build_policy, train.contrast_step


def record(layer, args, kwargs):
    log.write(json.dumps({"in_step": state["in_step"], "training": layer.training, "grad": torch.is_grad_enabled(),
                          # the condition transformers' GradientCheckpointingLayer checkpoints under
                          "checkpointing": bool(layer.gradient_checkpointing and layer.training and torch.is_grad_enabled())}) + "\n")


def build_policy(*args, **kwargs):
    policy = real_build_policy(*args, **kwargs)
    for layer in policy.language_model().model.layers:
        layer.register_forward_pre_hook(record, with_kwargs=True)
        if layer.gradient_checkpointing:   # count the checkpoint calls themselves, not only the condition
            func = layer._gradient_checkpointing_func
            def counted(*a, func=func, **k):
                log.write(json.dumps({"checkpoint_call": True}) + "\n")
                return func(*a, **k)
            layer._gradient_checkpointing_func = counted
    return policy


def contrast_step(*args, **kwargs):
    state["in_step"] = True
    try: return real_contrast_step(*args, **kwargs)
    finally: state["in_step"] = False


stage.build_policy, train.contrast_step = build_policy, contrast_step   # where prepare_stage and train_step look them up
cli.main(sys.argv[1:])
