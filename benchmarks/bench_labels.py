"""How learnable the grader's labels are, and what each shortcut loses: accuracy on the
hidden test labels of fresh data sets, per training variant.

    uv run python -m benchmarks.bench_labels [--samples 3000] [--seeds 6]

Each fresh data set is built as the grader builds it (``problems.ml_training.fresh_inputs``); the
pipeline is the strict reference's (the oracle's), with one thing changed per row:
fewer epochs, bigger batches, no optimiser step, no normalisation, or the seed's
z-score and magnitude-scaling strategies.  In process, one thread: about 0.5 s a run
at full size.  Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics

import numpy as np
import torch

from problems.ml_training.declarations.complex_pipeline import COMPLEX_SPEC
from problems.ml_training.fresh_inputs import make_dataset

# The strict reference, loaded from its file: its training recipe (``Trainer``,
# ``shuffled_order``, ``noisy``) is what these benchmarks vary.
_spec = importlib.util.spec_from_file_location("reference", COMPLEX_SPEC.reference)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

VARIANTS = {
    "original (3 epochs, batch 8)": {},
    "2 epochs": {"epochs": 2},
    "1 epoch": {"epochs": 1},
    "batches of 240": {"batch": 240},
    "no optimiser step": {"train": False},
    "no normalisation": {"normalise": "none"},
    "z-score normalisation": {"normalise": "zscore"},
    "magnitude scaling": {"normalise": "magnitude"},
}


def features(images: np.ndarray, normalise: str) -> np.ndarray:
    f = ref.ComplexFeatureExtractor(apply_normalization=normalise == "original")
    out = f.extract_all_features(images)
    if normalise == "zscore":
        out = (out - out.mean(0)) / (out.std(0) + 1e-8)
    elif normalise == "magnitude":
        out = out / (np.median(np.linalg.norm(out, axis=1)) + 1e-8)
    return out


def accuracy(seed: int, n: int, epochs: int = 3, batch: int = 8, train: bool = True,
             normalise: str = "original") -> float:
    ds = make_dataset(seed, n)
    np.random.seed(seed)
    torch.manual_seed(seed)
    images = np.random.rand(n, 28, 28).astype(np.float32)
    np.random.randint(0, 10, size=n)
    labels = np.asarray(ds.visible_labels)
    feats = features(images, normalise)
    order = np.random.permutation(n)
    train_idx, test_idx = order[:int(0.8 * n)], order[int(0.8 * n):]
    assert test_idx.tolist() == ds.test_rows
    model = ref.ComplexNN(feats.shape[1], 128, 10)
    trainer = ref.Trainer(model, lr=0.001)
    for _ in range(epochs):
        model.train()
        shuffle = ref.shuffled_order(len(train_idx))
        x = ref.noisy(feats[train_idx][shuffle])
        if train:
            trainer.train_epoch(x, labels[train_idx][shuffle], batch)
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(ref.noisy(feats[test_idx]))).argmax(1).tolist()
    return ds.accuracy(predicted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = list(range(10, 10 + args.seeds))
    print(f"{args.samples} samples, seeds {seeds}; accuracy on the hidden test labels "
          "(chance: 0.10)")
    base = [accuracy(s, args.samples) for s in seeds]
    for name, change in VARIANTS.items():
        accs = base if not change else [accuracy(s, args.samples, **change) for s in seeds]
        worst = min(a - b for a, b in zip(accs, base, strict=True))
        print(f"{name:<30} mean {statistics.mean(accs):.3f} (min {min(accs):.3f}, "
              f"max {max(accs):.3f}); vs original on the same data: worst {worst:+.3f}, "
              f"mean {statistics.mean(accs) - statistics.mean(base):+.3f}", flush=True)


if __name__ == "__main__":
    main()
