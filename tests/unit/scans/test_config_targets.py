"""Issue 28 item 3: configs that make a loader import and call code (NeMo/Hydra ``_target_``, Lightning
``class_path``, Keras registered names, diffusers and sentence-transformers registries) are refused unless
every callable is on the reviewed allowlist; refusals name the file, the key path and the target."""

import contextlib
import gzip
import io
import json
import random
import tarfile
from pathlib import Path

import pytest
import torch

from integrity.safeio import InputFormatError
from integrity.scans.modelgate import scan_path
from integrity.scans.modelgate.configtargets import scan_config_bytes
from integrity.scans.modelgate.targetlist import ConfigTargetsError, load_config_targets, parse_config_targets
from integrity.settings import package_data

NEMO_CONFIG = """\
name: QuartzNet15x5
target: nemo.collections.asr.models.ctc_models.EncDecCTCModel
nemo_version: 1.23.0
model:
  sample_rate: 16000
  preprocessor:
    _target_: nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor
    sample_rate: ${model.sample_rate}
  encoder:
    _target_: nemo.collections.asr.modules.ConvASREncoder
    jasper:
      - {filters: 256, repeat: 1, kernel: [33]}
  decoder:
    _target_: nemo.collections.asr.modules.ConvASRDecoder
    num_classes: 28
  optim:
    name: adamw
    lr: 0.001
    sched: {name: CosineAnnealing, warmup_steps: 100}
"""
EVIL_NEMO = NEMO_CONFIG.replace("_target_: nemo.collections.asr.modules.ConvASREncoder", "_target_: os.system")
LIGHTNING = """\
trainer: {max_epochs: 3}
optimizer:
  class_path: torch.optim.Adam
  init_args: {lr: 0.001}
"""


def _weights() -> bytes:
    buffer = io.BytesIO()
    torch.save({"encoder.weight": torch.ones(2, 2)}, buffer)
    return buffer.getvalue()


def _nemo(config: str, *, gz: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:  # NeMo: tarfile "w:" (older NeMo: "w:gz")
        for name, data in (("./model_config.yaml", config.encode()), ("./model_weights.ckpt", _weights())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0) if gz else buffer.getvalue()


def _scan(tmp: Path, name: str, data: bytes | str) -> list[tuple[str, str, str | None]]:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    report = scan_path(path)
    return [(f.rule, f.detail, f.callable) for f in report.findings]


@pytest.mark.parametrize("gz", [False, True], ids=["tar", "tar.gz"])
def test_nemo_archive_with_target_os_system_is_refused_naming_the_key(tmp_path: Path, gz: bool) -> None:
    path = tmp_path / "asr.nemo"
    path.write_bytes(_nemo(EVIL_NEMO, gz=gz))
    report = scan_path(path)
    assert not report.safe
    (finding,) = report.findings
    assert finding.rule == "config.callable-target" and finding.callable == "os.system"
    assert finding.path.endswith("!./model_config.yaml") and "model.encoder._target_" in finding.detail
    path.write_bytes(_nemo(NEMO_CONFIG, gz=gz))
    assert scan_path(path).safe, scan_path(path).reason


def test_unpacked_nemo_folder_and_plain_yaml_configs(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model_config.yaml").write_text(NEMO_CONFIG)
    (folder / "model_weights.ckpt").write_bytes(_weights())
    assert scan_path(folder).safe, scan_path(folder).reason
    (folder / "train.yaml").write_text("optimizer:\n  _target_: torch.optim.AdamW\n  lr: 0.1\n"
                                       "launcher:\n  _target_: subprocess.Popen\n  args: [id]\n")
    report = scan_path(folder)
    assert [(f.path, f.callable) for f in report.findings] == [("train.yaml", "subprocess.Popen")]
    assert "launcher._target_" in report.findings[0].detail


def test_targets_nested_deep_in_lists(tmp_path: Path) -> None:
    config = "model:\n  layers:\n    - {units: 4}\n    - blocks:\n        - - {_target_: os.system, command: id}\n"
    (rule, detail, target), = _scan(tmp_path, "c.yaml", config)
    assert (rule, target) == ("config.callable-target", "os.system")
    assert "model.layers[1].blocks[0][0]._target_" in detail


def test_lightning_class_path(tmp_path: Path) -> None:
    assert _scan(tmp_path, "ok/config.yaml", LIGHTNING) == []
    evil = LIGHTNING.replace("torch.optim.Adam", "os.system")
    (_, detail, target), = _scan(tmp_path, "bad/config.yaml", evil)
    assert target == "os.system" and "optimizer.class_path" in detail and "lightning" in detail
    nested = "model:\n  class_path: torch.nn.Linear\n  init_args:\n    act: {class_path: pty.spawn}\n"
    assert [t for _, _, t in _scan(tmp_path, "n/config.yaml", nested)] == ["pty.spawn"]


@pytest.mark.parametrize(("target", "why"), [
    ("builtins.eval", "'builtins'"),
    ("os . system", "not a plain dotted"),
    ("posix.system", "'posix'"),
    ("nemo.collections.../../os", "not a plain dotted"),
    ("nemo.collections.asr.models.ctc_models.os.system", "'os'"),  # Hydra's _locate walks attributes
    ("torch.hub.load", "'hub'"),
    ("torch.load", "'load'"),
    ("torch.nn.Module.__init__.__globals__", "private or dunder"),
    ("nemo.utils.model_utils.import_class_by_path", "import_class_by_path"),
    ("nemo.collections.asr.models.EncDecCTCModel.from_pretrained", "from_pretrained"),
    ("${oc.env:EVIL}", "not a plain dotted"),
    ("functools.partial", "'functools'"),
    ("mypackage.models.Net", "not on the hydra allowlist"),
    ("os\u2024system", "not a plain dotted"),
], ids=lambda v: v[:40])
def test_obfuscated_and_dangerous_targets_are_refused(tmp_path: Path, target: str, why: str) -> None:
    findings = _scan(tmp_path, "c.yaml", json.dumps({"model": {"_target_": target}}))
    assert [r for r, _, _ in findings if r != "config.resolver"] == ["config.callable-target"], findings
    assert why in findings[0][1] and "model._target_" in findings[0][1]


@pytest.mark.parametrize("target", ["torch.optim.AdamW", "torch.optim.lr_scheduler.CosineAnnealingLR",
                                    "nemo.collections.asr.models.EncDecCTCModel", "torch.nn.init.xavier_uniform_",
                                    "nemo.core.optim.lr_scheduler.CosineAnnealing", "omegaconf.DictConfig"])
def test_benign_hydra_targets_are_accepted(tmp_path: Path, target: str) -> None:
    assert _scan(tmp_path, "c.yaml", f"optim:\n  _target_: {target}\n  _partial_: true\n") == []


def test_yaml_tags_anchors_and_aliases_are_refused(tmp_path: Path) -> None:
    tag = "model:\n  _target_: !!python/name:os.system ''\n"
    assert [r for r, _, _ in _scan(tmp_path, "tag.yaml", tag)] == ["yaml.refused"]
    alias = "evil: &e os.system\nmodel:\n  _target_: *e\n"
    assert [r for r, _, _ in _scan(tmp_path, "alias.yaml", alias)] == ["yaml.refused"]
    merge = "base: &b {_target_: os.system}\nmodel:\n  <<: *b\n"
    assert [r for r, _, _ in _scan(tmp_path, "merge.yaml", merge)] == ["yaml.refused"]


def test_resolvers_that_build_nodes_or_run_code_are_refused(tmp_path: Path) -> None:
    config = json.dumps({"a": "${oc.create:'{_target_: os.system, command: id}'}",
                         "b": "${eval:'__import__(\"os\").system(\"id\")'}",
                         "c": "${model.sample_rate}", "d": "${oc.select:model.x, 1}"})
    findings = _scan(tmp_path, "r.yaml", config)
    assert [(r, d.split(":")[0]) for r, d, _ in findings] == [("config.resolver", "a"), ("config.resolver", "b")]


def test_look_alike_keys_are_refused(tmp_path: Path) -> None:
    for key in ("_t\u0430rget_", "\uff3ftarget\uff3f", "_tar\u200bget_", "_TARGET_", "class_p\u0430th", "_target_ "):
        findings = _scan(tmp_path, "k.yaml", json.dumps({"model": {key: "os.system"}}))
        assert [r for r, _, _ in findings] == ["config.key-lookalike"], (key, findings)
    assert _scan(tmp_path, "k.yaml", "Target: label\ncls: 3\ntarget: positive\n") == []  # ordinary data


def test_hydra_legacy_forms_and_shape(tmp_path: Path) -> None:
    assert [t for _, _, t in _scan(tmp_path, "a.yaml", "enc:\n  cls: os.system\n  params: {}\n")] == ["os.system"]
    ldm = "model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n  params: {timesteps: 1000}\n"
    assert _scan(tmp_path, "ldm.yaml", ldm) == []
    rules = [r for r, _, _ in _scan(tmp_path, "p.yaml", "x:\n  _partial_: yes please\n  _args_: 3\n")]
    assert rules.count("config.hydra-malformed") == 4


def test_json_configs_and_remote_code(tmp_path: Path) -> None:
    findings = _scan(tmp_path, "j/config.json", json.dumps({"model_type": "x", "head": {"_target_": "os.system"}}))
    assert [t for _, _, t in findings] == ["os.system"]
    nested = _scan(tmp_path, "n/params.yaml", "model:\n  encoder:\n    trust_remote_code: true\n")
    assert [r for r, _, _ in nested] == ["hf.remote-code"]
    pipes = _scan(tmp_path, "p/config.json", json.dumps({"custom_pipelines": {"x": {"impl": "p.P"}}}))
    assert [r for r, _, _ in pipes] == ["hf.remote-code"]


def test_keras_registered_names_from_unknown_packages_are_refused(tmp_path: Path) -> None:
    def config(registered: str | None) -> str:
        layer = {"module": "keras.layers", "class_name": "Dense", "registered_name": registered,
                 "config": {"name": "dense", "units": 2}}
        return json.dumps({"module": "keras", "class_name": "Sequential", "registered_name": None,
                           "config": {"name": "s", "layers": [layer]}})

    for registered in (None, "Dense", "keras.layers.Dense"):
        assert _scan(tmp_path, f"ok{registered}/config.json", config(registered)) == []
    for registered in ("evil_pkg>Dense", "kerasx.layers.Dense", "keras_hub>Dense", "keras.layers.Conv2D"):
        findings = _scan(tmp_path, f"bad{registered}/config.json", config(registered))
        assert [r for r, _, _ in findings] == ["keras.custom-object"], (registered, findings)


def test_diffusers_registries(tmp_path: Path) -> None:
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.27.0",
             "unet": ["diffusers", "UNet2DConditionModel"], "text_encoder": ["transformers", "CLIPTextModel"],
             "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"], "feature_extractor": [None, None],
             "requires_safety_checker": True}
    assert _scan(tmp_path, "sd/model_index.json", json.dumps(index)) == []
    for bad in ({**index, "unet": ["os", "system"]}, {**index, "unet": ["my_unet", "UNet"]},
                {**index, "_class_name": ["pipeline", "MyPipeline"]}):
        assert _scan(tmp_path, "bad/model_index.json", json.dumps(bad)), bad
    scheduler = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.27.0", "num_train_timesteps": 1000,
                 "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]}
    assert _scan(tmp_path, "s/scheduler_config.json", json.dumps(scheduler)) == []
    assert _scan(tmp_path, "t/scheduler_config.json", json.dumps({**scheduler, "_class_name": "os.system"}))


def test_sentence_transformers_modules(tmp_path: Path) -> None:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    assert _scan(tmp_path, "st/modules.json", json.dumps(modules)) == []
    modules[1]["type"] = "custom_module.Pooling"
    assert [t for _, _, t in _scan(tmp_path, "bad/modules.json", json.dumps(modules))] == ["custom_module.Pooling"]


def test_the_allowlist_file_is_reviewed_data() -> None:
    raw = json.loads(package_data("config_targets.json").read_text(encoding="utf-8"))
    targets = load_config_targets()
    assert targets.version == raw["version"] >= 1 and targets.keys["_target_"] == "hydra"
    broken = json.loads(json.dumps(raw))
    del broken["frameworks"]["hydra"]["prefixes"][0]["why"]
    with pytest.raises(ConfigTargetsError):
        parse_config_targets(broken)
    broken = json.loads(json.dumps(raw))
    broken["frameworks"]["hydra"]["prefixes"].append({"prefix": "os", "why": "no"})
    with pytest.raises(ConfigTargetsError):
        parse_config_targets(broken)


def test_the_bytes_entry_point_raises_only_input_errors() -> None:
    assert scan_config_bytes(EVIL_NEMO.encode(), "model_config.yaml")[0].callable == "os.system"
    assert scan_config_bytes(NEMO_CONFIG.encode(), "model_config.yaml") == []
    rng = random.Random(28)
    seeds = [EVIL_NEMO.encode(), LIGHTNING.encode(), json.dumps({"a": {"_target_": "os.system"}}).encode()]
    for _ in range(300):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(data))
            data[position:position + rng.randint(0, 4)] = rng.randbytes(rng.randint(0, 4))
        for name in ("model_config.yaml", "config.json"):
            with contextlib.suppress(InputFormatError):
                scan_config_bytes(bytes(data), name)
