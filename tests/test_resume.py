"""A run killed with SIGKILL mid-way and resumed ends with the same adapter weights as one that never stopped, and in
both every training forward runs in training mode with gradient checkpointing engaged, every scoring pass in eval mode."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

from safetensors.torch import load_file

ROOT = Path(__file__).parents[1]
STEPS, SAVE = 40, 5


def command(out: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "tests" / "record_modes.py"), "--config", str(ROOT / "configs" / "tiny.yaml"),
            "--output_dir", str(out), "--cache_dir", str(cache), "--max_steps", str(STEPS), "--save_steps", str(SAVE),
            "--micro_batch_size", "2", "--contrast_batch_size", "4", "--lora_dropout", "0.1", "--plots", "false",
            "--progress", "false", *extra]


def env(log: Path) -> dict:
    return dict(os.environ, RPO_NB_MODE_LOG=str(log))


def adapter(out: Path) -> dict:
    return load_file(out / "adapter" / "adapter_model.safetensors")


def forwards(log: Path) -> list[dict]:
    return [json.loads(l) for l in log.read_text().splitlines()]


def check_modes(records: list[dict], what: str):
    "Training forwards in training mode (checkpointed when they carry gradients); scoring forwards in eval mode."
    layer = [r for r in records if "in_step" in r]
    step, scoring = [r for r in layer if r["in_step"]], [r for r in layer if not r["in_step"]]
    with_grad = [r for r in step if r["grad"]]
    assert step, f"{what}: no training forward recorded"
    assert all(r["training"] for r in step), f"{what}: {sum(not r['training'] for r in step)} of {len(step)} training forwards in eval mode"
    assert with_grad and all(r["checkpointing"] for r in with_grad), \
        f"{what}: {sum(not r['checkpointing'] for r in with_grad)} of {len(with_grad)} training forwards without checkpointing"
    assert sum("checkpoint_call" in r for r in records) == len(with_grad), f"{what}: checkpoint calls != checkpointed forwards"
    assert all(not r["training"] for r in scoring), f"{what}: a scoring forward (reference, held-out) in training mode"


def test_sigkill_then_resume_gives_the_uninterrupted_weights(tmp_path):
    cache = tmp_path / "cache"
    straight = tmp_path / "straight"
    r = subprocess.run(command(straight, cache), capture_output=True, text=True, timeout=900, env=env(tmp_path / "straight.log"))
    assert r.returncode == 0, r.stderr[-3000:]
    check_modes(forwards(tmp_path / "straight.log"), "uninterrupted run")

    killed = tmp_path / "killed"
    p = subprocess.Popen(command(killed, cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(tmp_path / "killed.log"))
    deadline = time.time() + 600
    while not (killed / "checkpoints" / f"step-{2 * SAVE:07d}").exists():   # two checkpoints written, run still going
        assert p.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    assert not (killed / "adapter").exists()
    steps_logged = [json.loads(l)["step"] for l in (killed / "metrics.jsonl").read_text().splitlines()]
    assert max(steps_logged) < STEPS

    # resumed: the reference log-probs and the step-0 evaluation come from disk, so no scoring pass runs before the loop
    r = subprocess.run(command(killed, cache, "--resume"), capture_output=True, text=True, timeout=900, env=env(tmp_path / "resumed.log"))
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = forwards(tmp_path / "resumed.log")
    check_modes(resumed, "resumed run")
    first = next(i for i, x in enumerate(resumed) if "in_step" in x)
    assert resumed[first]["in_step"], "the resumed run scored before its first step: the cache was not hit"
    a, b = adapter(straight), adapter(killed)
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a), "resumed weights differ from the uninterrupted run's"
    # the metrics file reads as one run: every step once, the same numbers as the uninterrupted run
    lines = lambda d: [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
    la, lb = lines(straight), lines(killed)
    assert [r["step"] for r in la] == [r["step"] for r in lb]
    assert [r.get("loss") for r in la] == [r.get("loss") for r in lb]


def test_resume_of_a_finished_run_does_nothing_more(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "run"
    for extra in ((), ("--resume",)):
        r = subprocess.run(command(out, cache, "--max_steps", "4", *extra), capture_output=True, text=True, timeout=900,
                           env=env(tmp_path / "modes.log"))
        assert r.returncode == 0, r.stderr[-3000:]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4 + 2   # steps plus evaluations at 0 and the end
