"""Hub names are real code paths: offline, each fails fast with an error that says what was tried."""
import pytest

from rpo_nb.sources import load_tokenizer, read_rows
from rpo_nb.data import load_hh, load_tldr
from rpo_nb.embeddings import load_embedder, resolve_embedder


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"): monkeypatch.setenv(k, "1")


@pytest.mark.parametrize("load", [lambda: load_hh("Anthropic/hh-rlhf", data_dir="harmless-base"),
                                  lambda: load_tldr("openai/summarize_from_feedback"),
                                  lambda: read_rows("no-such-user/no-such-dataset")])
def test_dataset_hub_names_fail_clearly_offline(load):
    with pytest.raises(FileNotFoundError, match="not a local file or folder, and loading it from the hub failed"):
        load()


def test_embedder_hub_name_fails_clearly_offline():
    assert resolve_embedder("sentence-t5-large") == "sentence-transformers/sentence-t5-large"
    with pytest.raises(RuntimeError, match="cannot load the sentence embedder 'sentence-t5-large'"):
        load_embedder("sentence-t5-large")


def test_model_hub_name_fails_offline():
    with pytest.raises(OSError):
        load_tokenizer("mistralai/Mistral-7B-Instruct-v0.2")
