"""The memory estimate against reality: fake tensors against the same counter on real tensors in real runs, the
extrapolation over layers against the whole depth, and `rpo_train --estimate` loading nothing and writing nothing."""
import os, subprocess, sys
from pathlib import Path

import pytest
import torch

from rpo_nb.sources import load_tokenizer
from rpo_nb.memory import TensorMemory
from rpo_nb.config import load_config, run_data
from rpo_nb.estimate import PHASES, estimate_memory, measure_phases
from rpo_nb.cli import run

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("settings", [
    dict(loss="rpo", micro_batch_size=4, contrast_batch_size=16),   # a two-pass step
    dict(loss="kto", micro_batch_size=8),                           # unpaired, with its reference-point pass
    # SFT rows are single sequences, packed with the same 4-D mask as pairs (built on the host), real or fake
    dict(loss="sft", micro_batch_size=8),
], ids=["rpo_two_pass", "kto", "sft"])
def test_estimate_matches_the_counter_in_a_real_run(tmp_path, settings):
    cfg = load_config("tiny", max_steps=3, output_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"),
                      progress=False, plots=False, **settings)
    tok = load_tokenizer(cfg.model)
    estimated = measure_phases(cfg, "cpu", data=run_data(cfg, tok))
    with TensorMemory(len(tok)) as real: run(cfg)
    assert set(estimated) == set(real.phases) == set(PHASES)
    for phase, e in estimated.items():
        r = real.phases[phase]
        assert abs(e["peak"] / r["peak"] - 1) < 0.05, (phase, e, r)
        assert e["frozen weights"] == r["frozen weights"] and e["LoRA weights"] == r["LoRA weights"], (phase, e, r)


def test_two_depths_extrapolate_to_the_whole_model():
    cfg = load_config("quickstart", eval_batch_size=4)   # SmolLM2-135M's shape: 30 layers
    whole = measure_phases(cfg, "cuda", layers=None)
    est = estimate_memory(cfg, "cuda", gpu_memory=16e9)
    assert est["layers"] == 30
    for phase in whole:
        assert abs(est["phases"][phase]["peak"] / whole[phase]["peak"] - 1) < 0.01, (phase, est["phases"][phase], whole[phase])


def test_estimate_command_loads_no_weights_and_writes_nothing(tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(); work.mkdir()
    env = dict(os.environ, HF_HUB_OFFLINE="1", HOME=str(home), HF_HOME=str(home / "hf"), RPO_NB_CACHE=str(home / "cache"),
               XDG_CACHE_HOME=str(home / "xdg"))
    # Mistral-7B is nowhere on this machine: an estimate that needed its weights could not run at all
    r = subprocess.run([sys.executable, "-m", "rpo_nb.cli", "--config", "colab_t4_mistral7b", "--estimate",
                        "--gpu_memory", "15.8GB"], capture_output=True, text=True, cwd=work, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mistralai/Mistral-7B-Instruct-v0.2 (32 layers), nf4" in r.stdout and ": fits" in r.stdout, r.stdout
    assert "training step" in r.stdout and "frozen weights" in r.stdout
    written = [p for p in [*home.rglob("*"), *work.rglob("*")] if p.is_file() and "matplotlib" not in str(p)]
    assert written == [], written


def test_estimate_command_names_the_sizes_that_fit(tmp_path):
    from rpo_nb.config import load_config
    from rpo_nb.stage import _stage_settings
    from rpo_nb.estimate import estimate_memory
    # a GPU 4 MB smaller than the run needs (of ~25 MB of tensors): it does not fit, and smaller settings do
    cfg = _stage_settings(load_config("tiny", max_length=256), "pref")[0]
    size = (estimate_memory(cfg, "cuda", gpu_memory=1e12)["needed"] - 4e6) / 1e9
    r = subprocess.run([sys.executable, "-m", "rpo_nb.cli", "--config", "tiny", "--max_length", "256", "--estimate",
                        "--gpu_memory", f"{size:.4f}GB"], capture_output=True, text=True, cwd=tmp_path,
                       env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "does NOT fit" in r.stdout and "fits with (each alone): micro_batch_size" in r.stdout, r.stdout
    test_bad = subprocess.run([sys.executable, "-m", "rpo_nb.cli", "--config", "tiny", "--estimate", "--gpu_memory", "lots"],
                              capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert test_bad.returncode != 0 and test_bad.stderr.strip().splitlines()[-1].startswith("rpo_train: memory size 'lots'")


def test_zero_allowance_uses_deepspeeds_own_defaults():
    "The buckets the estimate adds under ZeRO are sized as DeepSpeed sizes them when a config leaves them out."
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from rpo_nb.estimate import ZERO_DEFAULTS
    for stage in (1, 2, 3):
        z = DeepSpeedZeroConfig(stage=stage)
        assert (z.reduce_bucket_size, z.contiguous_gradients, z.prefetch_bucket_size) == \
            (ZERO_DEFAULTS["reduce_bucket_size"], ZERO_DEFAULTS["contiguous_gradients"], ZERO_DEFAULTS["stage3_prefetch_bucket_size"])
        assert z.overlap_comm == (stage == 3)
        assert z.max_live_parameters == ZERO_DEFAULTS["stage3_max_live_parameters"]


def test_the_estimate_runs_for_a_model_without_sdpa(tmp_path):
    "Gemma-2's class has no sdpa attention: the estimate runs it with eager attention, as transformers would load it."
    import transformers
    from rpo_nb.config import load_config
    from rpo_nb.estimate import estimate_memory
    transformers.Gemma2Config(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=2,
                              num_key_value_heads=1, head_dim=32).save_pretrained(tmp_path)
    est = estimate_memory(load_config(model=str(tmp_path), max_length=64, max_prompt_length=32), "cuda", gpu_memory=16e9)
    assert est["layers"] == 4 and est["fits"] and est["phases"]["training step"]["activations"] > 0
