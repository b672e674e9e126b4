"""A run killed with SIGKILL mid-way and resumed ends with the same adapter weights as one that never stopped."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

from safetensors.torch import load_file

ROOT = Path(__file__).parents[1]
STEPS, SAVE = 40, 5


def command(out: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rpo_nb.train", "--config", str(ROOT / "configs" / "tiny.yaml"), "--output_dir", str(out),
            "--cache_dir", str(cache), "--max_steps", str(STEPS), "--save_steps", str(SAVE), "--micro_batch_size", "2",
            "--lora_dropout", "0.1", "--plots", "false", "--progress", "false", *extra]


def adapter(out: Path) -> dict:
    return load_file(out / "adapter" / "adapter_model.safetensors")


def test_sigkill_then_resume_gives_the_uninterrupted_weights(tmp_path):
    cache = tmp_path / "cache"
    straight = tmp_path / "straight"
    r = subprocess.run(command(straight, cache), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]

    killed = tmp_path / "killed"
    p = subprocess.Popen(command(killed, cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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

    r = subprocess.run(command(killed, cache, "--resume"), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
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
        r = subprocess.run(command(out, cache, "--max_steps", "4", *extra), capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4 + 2   # steps plus evaluations at 0 and the end
