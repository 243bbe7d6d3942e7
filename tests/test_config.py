import dataclasses
from pathlib import Path

import pytest

from edgefm import config, registry
from edgefm.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_demo_and_configs_load():
    assert config.load(ROOT / "configs" / "demo.yaml") == config.load(None, list(config.DEMO))
    assert config.load(None).train.precision == "fp32" and config.DEMO[0] == "train.precision=auto"
    from edgefm.fl import tenants

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        if tenants.is_tenants_file(path):  # several runs: every tenant's config validates
            assert len(tenants.load(path)[0]) >= 2
        else:
            config.load(path)  # every shipped config validates


def test_overrides_are_typed_and_nested():
    cfg = config.load(
        None,
        [
            "rounds=3",
            "algorithm.name=fedprox",
            "algorithm.mu=0.1",
            "train.lr=1e-3",
            "model.lora.target_modules=[query,key]",
            "data.max_train=null",
        ],
    )
    assert cfg.rounds == 3 and cfg.algorithm.name == "fedprox" and cfg.algorithm.mu == 0.1
    assert cfg.train.lr == 1e-3 and cfg.model.lora.target_modules == ("query", "key")
    assert cfg.data.max_train is None
    assert isinstance(cfg.train.lr, float)


def test_dump_round_trips(tmp_path):
    cfg = config.load(None, ["algorithm.name=fedprox", "algorithm.mu=0.3", "seed=7"])
    path = tmp_path / "c.yaml"
    path.write_text(config.dump(cfg))
    assert config.load(path) == cfg


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["roundz=3"], "roundz: unknown key; expected one of seed, task, rounds"),
        (["task=vision"], "task: 'vision' is not allowed; expected one of 'classify' | 'lm'"),
        (["task=lm"], "model.name: 'minilm' is not a causal-LM family"),
        (["task=lm", "model.name=llama", "algorithm.name=raffm"], "task: algorithm 'raffm' does not train 'lm'"),
        (["data.tokenizer=bpe:99"], "data.tokenizer: 'bpe:99' cannot be built"),
        (["data.public_fraction=1.0"], "data.public_fraction: 1.0 is out of range"),
        (["edge.memory_scale=0"], "edge.memory_scale: 0.0 is out of range"),
        (["model.sizes=[xl]"], "model.sizes[0]: 'xl' is not allowed"),
        (["train.lr=.nan"], "train.lr: nan is not a number"),
        (["train.lr=.inf"], "train.lr: inf is infinite; expected a finite value"),
        (["flower.round_timeout=-.inf"], "flower.round_timeout: -inf is infinite"),
        (["model.lora.alpha=-5"], "model.lora.alpha: -5 is out of range"),
        (["train.lrr=1"], "train.lrr: unknown key"),
        (["rounds=three"], "rounds: 'three' has the wrong type; expected an integer"),
        (["rounds=0"], "rounds: 0 is out of range"),
        (["partition.alpha=0"], "partition.alpha: 0.0 is out of range; expected a value in (0, inf]"),
        (["partition.alpha=-1"], "partition.alpha: -1.0 is out of range"),
        (["algorithm.name=fedx"], "algorithm.name: unknown algorithm 'fedx'; expected one of"),
        (["algorithm.mu=0.1"], "algorithm.mu: unknown key"),  # mu belongs to fedprox only
        (["algorithm.name=fedprox", "algorithm.mu=-1"], "algorithm.mu: -1.0 is out of range"),
        (["device=tpu"], "device: 'tpu' is not allowed; expected one of 'auto' | 'cpu' | 'cuda'"),
        (["model.finetune=half"], "model.finetune: 'half' is not allowed"),
        (["edge.tiers={toaster: 1}"], "edge.tiers: unknown tier 'toaster'"),
        (["rounds"], "expected key=value"),
        (["model.name=path"], "model.path: required when model.name=path"),
        (["model.path=/tmp/m"], "model.path: '/tmp/m' is set but model.name is 'minilm', so it would be ignored"),
    ],
)
def test_bad_values_name_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as err:
        config.load(None, overrides)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_and_invalid_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)


def test_switching_the_method_drops_the_files_keys_for_the_old_one():
    cfg = config.load("configs/splitfed_mnist.yaml", ["algorithm.name=fedprox", "algorithm.mu=0.1"])
    assert cfg.algorithm.name == "fedprox" and cfg.algorithm.mu == 0.1
    assert config.load("configs/splitfed_mnist.yaml", ["algorithm.name=splitfed"]).algorithm.cut == 2  # same method
    with pytest.raises(config.ConfigError, match="algorithm.cut: unknown key"):
        config.load("configs/splitfed_mnist.yaml", ["algorithm.name=fedavg", "algorithm.cut=2"])


def test_every_key_is_documented_from_the_code():
    from edgefm import config_reference as R

    keys = {(k.key, k.methods): k for k in R.all_keys()}
    assert all(k.meaning for k in keys.values()), [k.key for k in keys.values() if not k.meaning]
    # types, defaults and ranges come from the dataclasses and their checks
    assert keys[("rounds", "")].default == "5" and keys[("rounds", "")].allowed == ">= 1"
    assert keys[("fraction", "")].allowed == "> 0.0 and <= 1.0"
    assert keys[("model.finetune", "")].allowed == "one of lora, full"
    assert keys[("algorithm.mu", "fedprox")].allowed == ">= 0.0"
    assert keys[("algorithm.delta", "fedms")].allowed == ">= 1"  # a check_range inside a loop
    assert keys[("algorithm.participation", "splitfed")].type == "tuple[float, ...]"
    # every registered method's keys are listed, and nothing else is under algorithm.
    for name in registry.names("algorithm"):
        cls = registry.get("algorithm", name)
        for f in dataclasses.fields(cls):
            if f.name != "name":
                assert any(k == f"algorithm.{f.name}" and name in m.split(", ") for k, m in keys), (name, f.name)
    # every core key a config can set is in the reference
    flat = config.to_dict(config.load(None, []))
    stack, core = [("", flat)], set()
    while stack:
        prefix, d = stack.pop()
        for key, value in d.items():
            if isinstance(value, dict) and key not in ("tiers",):
                stack.append((f"{prefix}{key}.", value))
            else:
                core.add(f"{prefix}{key}")
    assert core - {"algorithm.name"} <= {k for k, _ in keys}


def test_docs_config_md_is_current():
    from edgefm import config_reference as R

    assert (ROOT / "docs" / "config.md").read_text() == R.markdown(), (
        "run: edgefm config keys --markdown > docs/config.md"
    )


def test_config_show_and_keys_on_the_cli(tmp_path):
    from typer.testing import CliRunner

    from edgefm.cli import app

    res = CliRunner().invoke(app, ["config", "show", str(ROOT / "configs" / "demo.yaml"), "--set", "rounds=3"])
    assert res.exit_code == 0, res.output
    shown = config.loads(res.output)
    assert shown == config.load(ROOT / "configs" / "demo.yaml", ["rounds=3"]) and shown.rounds == 3
    res = CliRunner().invoke(app, ["config", "keys", "fedprox"])
    assert res.exit_code == 0 and "algorithm.mu" in res.output and "algorithm.cut" not in res.output
    bad = CliRunner().invoke(app, ["config", "show", "--set", "rounds=0"])
    assert bad.exit_code == 2 and "rounds: 0 is out of range" in bad.output
    bare = CliRunner().invoke(app, ["train"])
    assert bare.exit_code == 2 and "no config" in bare.output
