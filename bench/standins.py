"""Random-weight stand-ins for the models the GPU check needs, built where it runs from the configs and tokenizer files
shipped in bench/standins/ (a machine without network has no hub, and the offline packages are too large to send).

    python bench/standins.py hub DIR                    # SmolLM2-135M-Instruct and all-MiniLM-L6-v2 as a hub cache in DIR
    python bench/standins.py llama7b DEST [--layers N] [--toy]   # a Llama-2-7B-shaped folder: config and tokenizer only
    python bench/standins.py run -m MODULE ARGS...      # MODULE as __main__, the 7B folders' weights made in memory

`hub` writes the two small models with random weights in the Hugging Face cache layout (models--ORG--NAME/refs/main,
snapshots/REV/...), so that with HF_HUB_CACHE=DIR and HF_HUB_OFFLINE=1 the hub names resolve exactly as a real cache
resolves them (rpo_nb.sources.resolve_pretrained, sentence-transformers). The shapes, tokenizers and chat template are
the real ones; the weights are not, so what they compute is noise: the GPU check ships the real MiniLM's embeddings of
its prompts (scripts/device_payload.sh), and no figure of it depends on what SmolLM2 says.

A `llama7b` folder holds no weights (13.5 GB in bf16 at 32 layers): a process that called `install_random_loader()`
(as `run` does) builds the model straight in the compute dtype on the device that `from_pretrained` is asked for, with
random weights, and quantises it to NF4 in place when asked, the way transformers' bitsandbytes loader lays it out
(Linear4bit layers, the head unquantised). Nothing is written to disk or read back. Its peak-memory counter is reset
once the model is built, so a measured peak counts from a model as from_pretrained would have left it.
"""
import argparse, json, os, runpy, shutil, sys
from pathlib import Path

HERE = Path(__file__).resolve().parent / "standins"
HUB_MODELS = {"HuggingFaceTB/SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct",
              "sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2"}
REVISION = "5eed0a1d" * 5          # the snapshot's made-up commit: refs/main points at it
MARKER = "standin.json"            # in a folder whose weights are made in memory
TOY = dict(hidden_size=256, intermediate_size=688, num_attention_heads=8, num_key_value_heads=8, head_dim=32)


def _copy_files(src: Path, dest: Path):
    for f in src.rglob("*"):
        if f.is_file():
            (dest / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest / f.relative_to(src))


def hub_cache(root: str | Path, seed: int = 0) -> dict[str, Path]:
    "SmolLM2-135M-Instruct and all-MiniLM-L6-v2 with random weights, in the hub cache layout under `root`; their snapshots."
    import torch, transformers
    root, out = Path(root), {}
    for repo, name in HUB_MODELS.items():
        folder = root / ("models--" + repo.replace("/", "--"))
        snap = folder / "snapshots" / REVISION
        if not (snap / "model.safetensors").exists():
            tmp = folder / "snapshots" / (REVISION + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True); tmp.mkdir(parents=True)
            torch.manual_seed(seed)
            if name.startswith("SmolLM2"):   # bf16, as the hub's weights are
                cfg = transformers.AutoConfig.from_pretrained(HERE / name)
                model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
            else:
                model = transformers.BertModel(transformers.BertConfig.from_json_file(HERE / name / "config.json"))
            model.save_pretrained(tmp)
            _copy_files(HERE / name, tmp)        # the real config and tokenizer files, over what save_pretrained wrote
            shutil.rmtree(snap, ignore_errors=True); tmp.rename(snap)
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / "main").write_text(REVISION)
        out[repo] = snap
    return out


def llama7b_folder(dest: str | Path, layers: int = 32, toy: bool = False, seed: int = 0) -> Path:
    """A Llama-2-7B-shaped model folder without weights (SmolLM2's tokenizer and 49,152-token vocabulary, as the
    benchmark's `random-7b` always had): `layers` decoder layers; `toy` shrinks the width for CPU dry runs."""
    dest = Path(dest); dest.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((HERE / "llama-2-7b" / "config.json").read_text())
    cfg.update(num_hidden_layers=layers, **(TOY if toy else {}))
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy2(HERE / "SmolLM2-135M-Instruct" / f, dest / f)
    (dest / "config.json").write_text(json.dumps(cfg, indent=1))
    (dest / MARKER).write_text(json.dumps({"random_weights": True, "seed": seed, "layers": layers, "toy": toy,
                                           "shape": "Llama-2-7B" + (" (toy width)" if toy else "")}))
    return dest


def is_random_standin(path) -> bool:
    try: return (Path(path) / MARKER).is_file()
    except (TypeError, OSError): return False


def _device(device_map) -> "torch.device":
    import torch
    if isinstance(device_map, dict) and len(device_map) == 1: device_map = next(iter(device_map.values()))
    if device_map is None or device_map == "cpu": return torch.device("cpu")
    if isinstance(device_map, int): return torch.device("cuda", device_map)
    if isinstance(device_map, (str, torch.device)) and str(device_map) != "auto": return torch.device(device_map)
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def quantize_4bit_(model, qc):
    "Replace the model's linear layers (not the head) by bitsandbytes 4-bit ones, quantising each weight where it lies."
    import bitsandbytes as bnb, torch
    skip = set(getattr(qc, "llm_int8_skip_modules", None) or []) | {"lm_head"} | set(getattr(model, "_keep_in_fp32_modules", None) or [])
    names = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear and n.split(".")[-1] not in skip and n not in skip]
    for name in names:   # one at a time: each full-precision weight is freed as soon as its 4-bit copy exists
        parent, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent) if parent else model
        child = getattr(parent, child_name)
        with torch.device("meta"):
            new = bnb.nn.Linear4bit(child.in_features, child.out_features, child.bias is not None, qc.bnb_4bit_compute_dtype,
                                    compress_statistics=qc.bnb_4bit_use_double_quant, quant_type=qc.bnb_4bit_quant_type,
                                    quant_storage=qc.bnb_4bit_quant_storage)
        w = child.weight.data
        new.weight = bnb.nn.Params4bit(w, requires_grad=False, **new.weight.__dict__).to(w.device)   # as transformers does
        if child.bias is not None: new.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
        new.source_cls = type(child)
        new.requires_grad_(False)
        setattr(parent, child_name, new)
        del child, w


def random_causal_lm(path, dtype=None, device_map=None, quantization_config=None, attn_implementation=None, **_):
    "What from_pretrained would return for a stand-in folder, with random weights made on the target device."
    import torch, transformers
    marker = json.loads((Path(path) / MARKER).read_text())
    config = transformers.AutoConfig.from_pretrained(path)
    dt = dtype if isinstance(dtype, torch.dtype) else getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else torch.float32
    device = _device(device_map)
    torch.manual_seed(marker.get("seed", 0))
    kw = {"dtype": dt, **({"attn_implementation": attn_implementation} if attn_implementation else {})}
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, **kw)
    qc = quantization_config
    if qc is not None and getattr(qc, "load_in_8bit", False): raise NotImplementedError("stand-ins: int8 is not built in memory")
    if qc is not None and getattr(qc, "load_in_4bit", False):
        quantize_4bit_(model, qc)
        from transformers.quantizers import AutoHfQuantizer
        model.hf_quantizer = AutoHfQuantizer.from_config(qc, pre_quantized=False)
        model.is_quantized, model.quantization_method, model.is_loaded_in_4bit = True, qc.quant_method, True
        model.config.quantization_config = qc
    model.name_or_path = model.config._name_or_path = str(path)
    model.eval()   # as from_pretrained leaves it
    if device.type == "cuda":
        torch.cuda.synchronize(device); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(device)
    return model


def install_random_loader():
    "Make AutoModelForCausalLM.from_pretrained build stand-in folders (those with standin.json) in memory; others load as ever."
    import transformers
    auto = transformers.AutoModelForCausalLM
    if getattr(auto, "_rpo_nb_standins", False): return
    original = auto.from_pretrained

    def from_pretrained(cls, path, *args, **kwargs):
        if is_random_standin(path): return random_causal_lm(path, **kwargs)
        return original(path, *args, **kwargs)

    auto.from_pretrained = classmethod(from_pretrained)
    auto._rpo_nb_standins = True


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "run":   # run MODULE or SCRIPT as __main__ with the loader installed
        rest = sys.argv[2:]
        install_random_loader()
        if rest[:1] == ["-m"]:
            sys.argv = [rest[1], *rest[2:]]
            runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = rest
            sys.path.insert(0, str(Path(rest[0]).resolve().parent))
            runpy.run_path(rest[0], run_name="__main__")
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hub"); h.add_argument("dir")
    l = sub.add_parser("llama7b"); l.add_argument("dest"); l.add_argument("--layers", type=int, default=32)
    l.add_argument("--toy", action="store_true")
    a = p.parse_args()
    if a.cmd == "hub":
        for repo, snap in hub_cache(a.dir).items(): print(f"{repo}: {snap}")
    else: print(llama7b_folder(a.dest, a.layers, a.toy))


if __name__ == "__main__": main()
