"""Global contrast across processes: two CPU processes (gloo, via accelerate launch) give the one-process gradient."""
import shutil, subprocess, sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no"]


def grads(out: Path, *args: str, processes: int = 1) -> dict:
    cmd = (LAUNCH if processes == 2 else [sys.executable]) + [str(HERE / "ddp_grads.py"), "--out", str(out), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    saved = torch.load(out, weights_only=False)
    if processes == 2: assert saved["world"] == 2
    return saved


def rel(a: dict, b: dict) -> float:
    num = sum((a[k] - b[k]).pow(2).sum() for k in a) ** 0.5
    return float(num / sum(b[k].pow(2).sum() for k in b) ** 0.5)


@pytest.mark.parametrize("loss", ["rpo", "rpo_unpaired", "dpo"])
def test_two_processes_average_to_the_single_process_gradient(tmp_path, loss):
    one = grads(tmp_path / "one.pt", "--loss", loss)
    two = grads(tmp_path / "two.pt", "--loss", loss, processes=2)
    assert abs(one["loss"] - two["loss"]) < 1e-9
    assert rel(two["grads"], one["grads"]) < 1e-6


def test_per_device_contrast_matches_the_mean_of_the_halves(tmp_path):
    """global_contrast=False reproduces the reference code: each device's loss on its own slice, gradients averaged."""
    two = grads(tmp_path / "two.pt", "--per_device", processes=2)
    halves = [grads(tmp_path / f"h{k}.pt", "--items", ",".join(map(str, range(4 * k, 4 * k + 4)))) for k in (0, 1)]
    mean = {n: (halves[0]["grads"][n] + halves[1]["grads"][n]) / 2 for n in halves[0]["grads"]}
    assert rel(two["grads"], mean) < 1e-6
    glob = grads(tmp_path / "glob.pt", processes=2)
    assert rel(glob["grads"], mean) > 1e-3    # the global contrast is a different (larger) loss
