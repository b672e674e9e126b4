"""The benchmark scripts run end to end on their quick settings (the figures come from the full settings)."""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_vs_trl_quick_configuration(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "vs_trl.py"), "--config", "quick", "--out_dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-4000:]
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("ratio_step_time=") and "ratio_epoch_time=" in last and "ratio_peak_mem=" in last
    res = json.loads((tmp_path / "vs_trl_quick.json").read_text())
    assert {row["system"] for row in res["rows"]} == {"trl", "trl_precompute", "rpo_nb_dpo", "rpo_nb_rpo"}
    raw = res["raw"]
    assert raw["trl"][0]["trl_tokens"] == raw["rpo_nb_dpo"][0]["tokens"]          # both sides saw the same tokens
    assert abs(raw["trl"][0]["loss_first"] - raw["rpo_nb_dpo"][0]["loss_first"]) < 1e-3   # and the same first DPO loss (log 2)
    assert (tmp_path / "vs_trl_quick.md").exists()


def test_contrast_batch_benchmark_runs(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "contrast_batch.py"), "--model", "rpo-nb/tiny-random-llama",
                        "--pairs", "16", "--micro", "4", "--max_length", "128", "--rounds", "1", "--out_dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-4000:]
    res = json.loads((tmp_path / "contrast_batch.json").read_text())
    assert set(res["ratios"]) == {"time", "peak_memory", "step_memory"} and res["ratios"]["time"] > 0
