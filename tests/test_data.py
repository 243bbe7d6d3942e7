import json

import numpy as np
import pandas as pd
import pytest

from edgefm import EdgefmError
from edgefm.config import DataConfig
from edgefm.data.encode import encode
from edgefm.data.sources import bbcnews, load_data


@pytest.mark.parametrize(
    ("name", "n_train", "n_test", "labels"),
    [
        ("sst2", 60614, 872, ["negative", "positive"]),
        ("agnews", 10001, 7600, ["World", "Sports", "Business", "Sci/Tech"]),
    ],
)
def test_named_datasets_have_documented_sizes(name, n_train, n_test, labels):
    b = load_data(DataConfig(name=name, max_train=None), seed=0)
    assert (len(b.train), len(b.test), b.label_names) == (n_train, n_test, labels)
    assert set(b.train["label"]) == set(range(len(labels)))
    assert all(isinstance(t, str) and t for t in b.test["text"][:50])


def test_small_named_datasets_split_by_seed():
    fk = load_data(DataConfig(name="flipkart", max_train=None), seed=0)
    assert len(fk.train) + len(fk.test) == 331 and fk.label_names == ["negative", "neutral", "positive"]
    assert np.bincount(np.r_[fk.train["label"], fk.test["label"]]).tolist() == [84, 7, 240]
    dx = load_data(DataConfig(name="ddxplus", max_train=None), seed=0)
    assert len(dx.train) + len(dx.test) == 100
    again = load_data(DataConfig(name="ddxplus", max_train=None), seed=0)
    assert dx.test["text"] == again.test["text"]


def test_bbcnews_from_package():
    ds, labels = bbcnews()
    assert len(ds) == 2225 and labels == ["business", "entertainment", "politics", "sports", "tech"]


def test_cap_is_seeded():
    a = load_data(DataConfig(name="sst2", max_train=100, max_test=50), seed=3)
    b = load_data(DataConfig(name="sst2", max_train=100, max_test=50), seed=3)
    assert len(a.train) == 100 and len(a.test) == 50 and a.train["text"] == b.train["text"]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_local_files(tmp_path, suffix):
    frame = pd.DataFrame(
        {"review": [f"text {i}" for i in range(20)], "stars": ["good", "bad"] * 10, "user": list("ab") * 10}
    )
    path = tmp_path / f"mine{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".json":
        path.write_text(json.dumps(frame.to_dict(orient="records")))
    else:
        frame.to_parquet(path)
    b = load_data(DataConfig(name=None, path=str(path), text_column="review", label_column="stars"), seed=0)
    assert b.label_names == ["bad", "good"] and len(b.train) + len(b.test) == 20
    assert "user" in b.train.column_names  # other columns survive (natural partitioning)


def test_local_file_errors(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"a": ["x", "y"], "b": [0, 1]}).to_csv(path, index=False)
    with pytest.raises(EdgefmError, match="no column 'review'; expected one of a, b"):
        load_data(DataConfig(name=None, path=str(path), text_column="review", label_column="b"), seed=0)
    with pytest.raises(EdgefmError, match="does not exist"):
        load_data(DataConfig(name=None, path=str(tmp_path / "missing.csv")), seed=0)


def test_encode_and_batches_are_deterministic():
    import torch
    from transformers import AutoTokenizer

    from edgefm.models.backbones import minilm_path

    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    enc = encode(["a short one", "a much longer sentence than the first one is", "mid length text"], [0, 1, 0], tok, 8)
    assert max(enc.lengths) == 8  # truncated
    many = encode([f"sentence number {i}" for i in range(12)], list(range(12)), tok, 8)

    def order(seed):
        return [
            x for b in many.batches(5, torch.Generator().manual_seed(seed), shuffle=True) for x in b.labels.tolist()
        ]

    assert order(0) == order(0) and sorted(order(0)) == list(range(12))  # each example once, same order
    assert order(0) != order(1) and order(0) != list(range(12))
    batch = enc.collate([0, 1])
    assert batch.input_ids.shape == (2, 8) and batch.attention_mask[0].sum() < 8


def test_a_named_dataset_no_folder_holds_comes_from_the_hub(tmp_path, monkeypatch):
    """EDGEFM_DATA_DIR first, then ../shared/data; where neither holds the dataset, the hub (here a
    stand-in for ``datasets.load_dataset``: this machine has no route to it)."""
    import datasets

    from edgefm.data import sources

    monkeypatch.setattr(sources, "data_roots", lambda: [tmp_path])
    monkeypatch.setattr(sources, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    asked = []

    def fake_load(repo, split):
        asked.append((repo, split))
        n = 6 if split == "train" else 4
        return datasets.Dataset.from_dict({"idx": list(range(n)), "sentence": [f"{split} {i}" for i in range(n)],
                                           "label": [i % 2 for i in range(n)]})  # fmt: skip

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    b = load_data(DataConfig(name="sst2", max_test=3), 0)
    assert asked == [("stanfordnlp/sst2", "train"), ("stanfordnlp/sst2", "validation")]
    assert b.label_names == ["negative", "positive"] and len(b.train) == 6 and len(b.test) == 3
    assert b.train["text"][1] == "train 1" and b.train["label"][:3] == [0, 1, 0]
    (tmp_path / "sst2").mkdir()  # a folder beats the hub
    pd.DataFrame({"sentence": ["good", "bad"], "label": [1, 0]}).to_csv(
        tmp_path / "sst2/train.tsv", sep="\t", index=False
    )
    pd.DataFrame({"sentence": ["fine"], "label": [1]}).to_csv(tmp_path / "sst2/test.tsv", sep="\t", index=False)
    asked.clear()
    b = load_data(DataConfig(name="sst2"), 0)
    assert not asked and b.train["text"] == ["good", "bad"]


def test_offline_without_the_files_is_one_line_naming_where_to_put_them(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from edgefm.cli import app
    from edgefm.data import sources

    monkeypatch.setattr(sources, "data_roots", lambda: [tmp_path])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))  # an empty cache: nothing to fall back on
    with pytest.raises(EdgefmError) as err:
        load_data(DataConfig(name="agnews"), 0)
    msg = str(err.value)
    assert "agnews/dev.tsv" in msg and "EDGEFM_DATA_DIR" in msg and "HF_HUB_OFFLINE" in msg and "\n" not in msg
    with pytest.raises(EdgefmError, match="flipkart/flipkart_review.csv"):  # no hub copy to fall back on
        load_data(DataConfig(name="flipkart"), 0)
    out = tmp_path / "run"
    r = CliRunner().invoke(
        app, ["train", "--out", str(out), "--set", "data.name=sst2", "--set", "model.name=tiny_bert"]
    )
    assert r.exit_code == 2 and "sst2/train.tsv" in r.output and "Traceback" not in r.output
    assert not (out / "summary.json").exists()
