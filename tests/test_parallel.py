"""The shipped multi-process launch configs on two CPU processes (gloo), against one process on the same run config:
FSDP shards the weights and trains the same numbers, DeepSpeed ZeRO-2/3 accumulate and step as configured, data
parallelism trains the same objective on one or two processes, evaluation with fewer batches than processes does not
hang, and sharded runs resume exactly."""
import json, os, shutil, subprocess, sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "rpo_nb" / "configs"
# two-pass contrast batches (4 items per loss, 1 per micro-batch on each of 2 processes), 2 contrast batches per step
RUN = ["--config", "tiny", "--max_steps", "4", "--save_steps", "2", "--micro_batch_size", "1", "--contrast_batch_size", "4",
       "--gradient_accumulation_steps", "2", "--lora_dropout", "0", "--progress", "false", "--plots", "false"]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def cpu_config(name: str, tmp: Path) -> Path:
    "A shipped accelerate config as two CPU processes run it: only the precision changes (no bf16 autocast on gloo)."
    cfg = yaml.safe_load((CONFIGS / name).read_text())
    cfg.update(mixed_precision="no", num_processes=2)
    out = tmp / name; out.write_text(yaml.safe_dump(cfg)); return out


def rpo_train(out: Path, cache: Path, *extra, launch: list[str] | None = None, fsdp: bool = False, timeout: int = 900):
    "`rpo_train` with the shared settings, in one process or under `accelerate launch` (FSDP through its CPU harness)."
    script = [str(ROOT / "tests" / "fsdp_on_cpu.py")] if fsdp else ["-m", "rpo_nb.cli"]
    cmd = ([sys.executable, "-m", "accelerate.commands.launch", *launch] if launch else [sys.executable]) + script
    r = subprocess.run(cmd + [*RUN, "--output_dir", str(out), "--cache_dir", str(cache), *extra], capture_output=True,
                       text=True, timeout=timeout, env=ENV)
    assert r.returncode == 0, r.stderr[-4000:]
    return r


def steps(out: Path) -> list[dict]:
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]


def rel(out_a: Path, out_b: Path) -> float:
    a, b = (load_file(o / "adapter" / "adapter_model.safetensors") for o in (out_a, out_b))
    assert a.keys() == b.keys()
    return float(sum((a[k] - b[k]).pow(2).sum() for k in a) ** 0.5 / sum(a[k].pow(2).sum() for k in a) ** 0.5)


def crash_after_first_checkpoint(done_run: Path, dest: Path) -> Path:
    "A copy of a finished 4-step run as it was when the process died right after its step-2 checkpoint."
    shutil.copytree(done_run, dest)
    for f in ("checkpoints/step-0000004", "adapter", "done.json", "eval.json"):
        p = dest / f
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    return dest


def same_training(one: Path, other: Path, tol: float):
    "Same losses, same global gradient norms, same learning rates step by step, and the same final adapter."
    a, b = steps(one), steps(other)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, len(a) + 1)) and a
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) <= tol * abs(x["loss"]), (x["loss"], y["loss"])
        assert abs(x["grad_norm"] - y["grad_norm"]) <= tol * x["grad_norm"], (x["grad_norm"], y["grad_norm"])
        assert x["learning_rate"] == y["learning_rate"]
    assert rel(one, other) < tol


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    "The run on one process: what every two-process run must reproduce."
    d = tmp_path_factory.mktemp("one")
    rpo_train(d / "run", d / "cache")
    return d / "run"


def test_fsdp_shards_the_weights_and_trains_as_one_process_then_resumes_exactly(one, tmp_path):
    launch = ["--config_file", str(cpu_config("accelerate_fsdp.yaml", tmp_path))]
    rpo_train(tmp_path / "fsdp", tmp_path / "cache", launch=launch, fsdp=True)
    done, single = (json.loads((d / "done.json").read_text())["parallel"] for d in (tmp_path / "fsdp", one))
    assert done["backend"] == "FSDP" and done["processes"] == 2
    total = single["frozen_params_per_process"][0]
    assert [round(n / total, 3) for n in done["frozen_params_per_process"]] == [0.5, 0.5]   # each holds half the weights
    assert done["fsdp_decoder_layers"] == 2                                               # each decoder layer a unit
    same_training(one, tmp_path / "fsdp", tol=1e-5)
    resumed = crash_after_first_checkpoint(tmp_path / "fsdp", tmp_path / "fsdp_resumed")
    r = rpo_train(resumed, tmp_path / "cache", "--resume", launch=launch, fsdp=True)
    assert "resuming from step 2 of 4" in r.stdout
    assert rel(tmp_path / "fsdp", resumed) == 0.0


def test_fsdp_shards_4bit_weights_stored_in_the_compute_dtype(tmp_path):
    """QLoRA + FSDP: NF4 weights packed in bf16 storage are sharded like any others; bf16 compute agrees to its precision."""
    four_bit = ["--quantization", "nf4", "--dtype", "bfloat16", "--max_steps", "2"]
    rpo_train(tmp_path / "one", tmp_path / "cache", *four_bit)
    launch = ["--config_file", str(cpu_config("accelerate_fsdp.yaml", tmp_path))]
    rpo_train(tmp_path / "fsdp", tmp_path / "cache", *four_bit, launch=launch, fsdp=True)
    done, single = (json.loads((d / "done.json").read_text())["parallel"] for d in (tmp_path / "fsdp", tmp_path / "one"))
    total = single["frozen_params_per_process"][0]
    assert [round(n / total, 3) for n in done["frozen_params_per_process"]] == [0.5, 0.5]
    same_training(tmp_path / "one", tmp_path / "fsdp", tol=5e-3)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_accumulates_and_steps_once_per_optimizer_step(one, tmp_path, stage):
    launch = ["--config_file", str(cpu_config(f"accelerate_deepspeed_zero{stage}.yaml", tmp_path))]
    rpo_train(tmp_path / "ds", tmp_path / "cache", launch=launch)
    assert json.loads((tmp_path / "ds" / "done.json").read_text())["parallel"]["backend"] == "DEEPSPEED"
    # 2 contrast batches x 2 micro-batches = 4 backward passes per step, and the engine stepped once per step
    assert [r["deepspeed/optimizer_steps"] for r in steps(tmp_path / "ds")] == [1, 2, 3, 4]
    same_training(one, tmp_path / "ds", tol=2e-5)
    resumed = crash_after_first_checkpoint(tmp_path / "ds", tmp_path / "ds_resumed")   # ZeRO's partitions, masters included
    r = rpo_train(resumed, tmp_path / "cache", "--resume", launch=launch)
    assert "resuming from step 2 of 4" in r.stdout
    assert rel(tmp_path / "ds", resumed) == 0.0


def test_deepspeed_zero3_refuses_4bit_weights_at_the_start(tmp_path):
    launch = ["--config_file", str(cpu_config("accelerate_deepspeed_zero3.yaml", tmp_path))]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch, "-m", "rpo_nb.cli", *RUN, "--quantization", "nf4",
           "--dtype", "bfloat16", "--output_dir", str(tmp_path / "run"), "--cache_dir", str(tmp_path / "cache")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert r.returncode != 0 and "ZeRO-3 partitions the weights" in r.stderr, r.stderr[-3000:]


def test_data_parallel_trains_the_same_objective_on_two_processes(one, tmp_path):
    """contrast_batch_size counts the items of one loss over all processes: the same config, the same training."""
    launch = ["--config_file", str(cpu_config("accelerate_ddp.yaml", tmp_path))]
    rpo_train(tmp_path / "ddp", tmp_path / "cache", launch=launch)
    same_training(one, tmp_path / "ddp", tol=1e-5)
    own = [r["contrast/own_pair_beta"] for r in steps(tmp_path / "ddp")]
    assert own == pytest.approx([r["contrast/own_pair_beta"] for r in steps(one)], rel=1e-6)   # logged: beta x mean W_ii


def test_fewer_evaluation_batches_than_processes_does_not_hang(tmp_path):
    launch = ["--config_file", str(cpu_config("accelerate_ddp.yaml", tmp_path))]
    r = rpo_train(tmp_path / "run", tmp_path / "cache", "--max_test_items", "8", "--eval_batch_size", "8", launch=launch,
                  timeout=300)   # a hang ends here as a timeout
    assert "held-out reward accuracy on 8 pairs" in r.stdout


def test_fsdp_under_bf16_returns_float32_log_probs(tmp_path):
    """accelerate's FSDP2 policy casts the root module's output to bf16: summed log-probs of ~-700 would move in steps
    of 4. rpo_nb's FSDP settings keep the output (and the gradient reduction) in float32; bf16 only computes."""
    launch = ["--config_file", str(CONFIGS / "accelerate_fsdp.yaml")]   # as shipped: bf16 mixed precision
    r = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *launch, str(ROOT / "tests" / "fsdp_precision.py")],
                       capture_output=True, text=True, timeout=600, env=ENV)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(next(l for l in r.stdout.splitlines() if l.startswith("{")))
    assert out["dtype"] == "torch.float32"
    assert abs(out["fsdp"] - out["float32"]) < 0.05 and out["fsdp"] != round(out["fsdp"])   # bf16 arithmetic, not a bf16 result


def test_a_nan_loss_on_one_process_skips_the_whole_step_under_deepspeed(tmp_path):
    launch = ["--config_file", str(cpu_config("accelerate_deepspeed_zero2.yaml", tmp_path))]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch, str(ROOT / "tests" / "nan_on_one_rank.py"), "--config",
           "tiny", "--output_dir", str(tmp_path / "run"), "--cache_dir", str(tmp_path / "cache"), "--max_steps", "3",
           "--micro_batch_size", "2", "--contrast_batch_size", "4", "--save_steps", "1", "--save_total_limit", "5",
           "--progress", "false", "--plots", "false"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert r.returncode == 0, r.stderr[-4000:]
    assert [x["skipped"] for x in steps(tmp_path / "run")] == [0, 1, 0]
    w1, w2 = (load_file(tmp_path / "run" / "checkpoints" / f"step-000000{k}" / "adapter" / "adapter_model.safetensors") for k in (1, 2))
    assert all((w1[k] == w2[k]).all() for k in w1)   # DeepSpeed stepped its engine, and its overflow check kept the weights


def test_a_nan_loss_on_one_process_skips_the_step_on_all_and_keeps_one_fp16_loss_scale(tmp_path):
    """With each process its own loss (`global_contrast: false`), a NaN loss on one of them: every process skips the step
    and keeps its loss scale (NaN gradients reach all through DDP's all-reduce, so all must know the loss was the cause);
    a scale lowered on some processes only would scale their gradients differently from then on."""
    launch = ["--config_file", str(cpu_config("accelerate_ddp.yaml", tmp_path))]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch, str(ROOT / "tests" / "nan_on_one_rank.py"), "--config",
           "tiny", "--output_dir", str(tmp_path / "run"), "--cache_dir", str(tmp_path / "cache"), "--max_steps", "3",
           "--micro_batch_size", "2", "--contrast_batch_size", "2", "--global_contrast", "false", "--save_steps", "10",
           "--progress", "false", "--plots", "false"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(ENV, NAN_FP16_SCALER="1"))
    assert r.returncode == 0, r.stderr[-4000:]
    recs = steps(tmp_path / "run")
    assert [x["skipped"] for x in recs] == [0, 1, 0] and [x["loss_scale"] for x in recs] == [1024.0] * 3, recs
    assert "non-finite loss, loss scale kept" in r.stderr


def test_deepspeed_zero2_trains_4bit_weights_and_8bit_adam_as_one_process(tmp_path):
    """QLoRA under ZeRO-2 (weights replicated, 4-bit ones too) and bitsandbytes' 8-bit AdamW stepping ZeRO's flat
    float32 partition each train as one process does (8-bit states are blockwise over other layouts: ~10⁻³)."""
    launch = ["--config_file", str(cpu_config("accelerate_deepspeed_zero2.yaml", tmp_path))]
    for name, extra in (("nf4", ["--quantization", "nf4", "--dtype", "bfloat16"]), ("adamw_8bit", ["--optimizer", "adamw_8bit"])):
        rpo_train(tmp_path / f"one_{name}", tmp_path / "cache", *extra, "--max_steps", "3")
        rpo_train(tmp_path / f"ds_{name}", tmp_path / "cache", *extra, "--max_steps", "3", launch=launch)
        assert json.loads((tmp_path / f"ds_{name}" / "done.json").read_text())["parallel"]["backend"] == "DEEPSPEED"
        same_training(tmp_path / f"one_{name}", tmp_path / f"ds_{name}", tol=5e-3)


def test_deepspeed_with_a_trainer_style_config_file_of_auto_values(one, tmp_path):
    """The DeepSpeed JSON that Transformers' Trainer documents, every value 'auto', optimiser and scheduler included:
    the run config fills it (accelerate alone stops at "Can't find `model.config`") and it trains as one process."""
    auto = {"fp16": {"enabled": "auto"}, "bf16": {"enabled": "auto"},
            "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
            "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto", "warmup_num_steps": "auto"}},
            "zero_optimization": {"stage": 2, "allgather_partitions": True, "allgather_bucket_size": 2e8, "overlap_comm": True,
                                  "reduce_scatter": True, "reduce_bucket_size": "auto", "contiguous_gradients": True},
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "steps_per_print": 2000,
            "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "wall_clock_breakdown": False}
    (tmp_path / "ds.json").write_text(json.dumps(auto))
    launch_cfg = {"compute_environment": "LOCAL_MACHINE", "distributed_type": "DEEPSPEED", "num_machines": 1, "num_processes": 2,
                  "machine_rank": 0,   # the precision too is the JSON's ('auto': the run's, none on a CPU)
                  "deepspeed_config": {"deepspeed_config_file": str(tmp_path / "ds.json"), "zero3_init_flag": False}}
    (tmp_path / "launch.yaml").write_text(yaml.safe_dump(launch_cfg))
    rpo_train(tmp_path / "ds", tmp_path / "cache", launch=["--config_file", str(tmp_path / "launch.yaml")])
    assert [r["deepspeed/optimizer_steps"] for r in steps(tmp_path / "ds")] == [1, 2, 3, 4]
    same_training(one, tmp_path / "ds", tol=2e-5)


def test_similar_contrast_sets_train_alike_on_two_processes_and_resume_with_the_same_sets(one, tmp_path):
    """contrast_sets: similar builds each epoch's contrast batches from the prompts' embeddings, a pure function of the
    seed and the epoch: two processes (each half of every set) train as one does, and a resumed run continues with the
    same sets, bit for bit. The sets' prompts are more alike than random sets' (the logged mean cosine)."""
    similar = ["--contrast_sets", "similar"]
    rpo_train(tmp_path / "one", tmp_path / "cache", *similar)
    launch = ["--config_file", str(cpu_config("accelerate_ddp.yaml", tmp_path))]
    rpo_train(tmp_path / "ddp", tmp_path / "cache", *similar, launch=launch)
    same_training(tmp_path / "one", tmp_path / "ddp", tol=1e-5)
    resumed = crash_after_first_checkpoint(tmp_path / "one", tmp_path / "resumed")
    r = rpo_train(resumed, tmp_path / "cache", *similar, "--resume")
    assert "resuming from step 2 of 4" in r.stdout and rel(tmp_path / "one", resumed) == 0.0
    cos = lambda run: sum(s["contrast/mean_cosine"] for s in steps(run)) / len(steps(run))
    assert cos(tmp_path / "one") > cos(one) + 0.05, (cos(tmp_path / "one"), cos(one))
