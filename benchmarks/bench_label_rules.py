"""Which label rules could replace brightness deciles: learnability by the original, what
one epoch of three loses, and whether the seed's z-score normalisation keeps up.

    uv run python -m benchmarks.bench_label_rules [samples] [seeds] [rule,rule,...]

An exploration kept for the record (results in benchmarks/README.md): each rule labels
the original's images for a seed; the strict reference's training (the oracle's) is run
with one change per row; ``other_traj`` is the same recipe from another torch seed (how
far an honest candidate whose random stream differs lands).  Rules: ``bright`` (the
grader's rule, before its class order), ``lin`` (deciles of a random direction in the
model's inputs), ``teacher`` (argmax of a random tanh network on the standardised model
inputs; ``_g2``/``_g4`` sharper, ``_f9`` first 9 features, ``_raw`` on the raw features,
``_raw_b`` on brightness alone), ``s_dec`` (deciles of the original's per-sample scale),
``s_mix`` (scale plus half the brightness).
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from benchmarks.bench_labels import ref  # the strict reference, loaded once
from problems.ml_training.fresh_inputs import brightness_labels

VARIANTS = {"orig": {}, "other_traj": {"tseed": "other"}, "2ep": {"epochs": 2},
            "1ep": {"epochs": 1}, "b240": {"batch": 240}, "untrained": {"train": False},
            "zscore": {"norm": "zscore"}, "nonorm": {"norm": "none"}, "mag": {"norm": "mag"}}


def deciles(v: np.ndarray) -> np.ndarray:
    return np.digitize(v, np.quantile(v, np.linspace(0, 1, 11)[1:-1]))


def rule_labels(rule: str, images: np.ndarray, feats: np.ndarray, raw: np.ndarray,
                rs: np.random.RandomState) -> np.ndarray:
    x = np.clip(feats, 0, 1)
    if rule == "bright":
        return brightness_labels(images)
    if rule.startswith("s_"):
        scale = raw[:, 0].astype(np.float64) / feats[:, 0]
        if rule == "s_dec":
            return deciles(scale)
        b = raw[:, 0]
        return deciles((scale - scale.mean()) / scale.std() + 0.5 * (b - b.mean()) / b.std())
    if rule == "lin":
        s = x.std(0)
        w = np.where(s > 1e-6, rs.normal(size=x.shape[1]) / np.maximum(s, 1e-6), 0)
        return deciles(x @ w)
    if "_raw" in rule:
        x = raw
    xs = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    xs[:, x.std(0) < 1e-6] = 0
    if "_f9" in rule:
        xs[:, 9:] = 0
    if "_b" in rule:
        xs[:, :] = 0
        xs[:, 0] = (x[:, 0] - x[:, 0].mean()) / x[:, 0].std()
    gain = float(rule.split("_g")[1]) if "_g" in rule else 1.0
    w1 = rs.normal(size=(13, 64)) * gain / np.sqrt(13)
    w2 = rs.normal(size=(64, 10)) / np.sqrt(64)
    out = np.tanh(xs @ w1) @ w2
    if "dec" in rule:
        return deciles(out[:, 0])
    return (out - np.median(out, 0)).argmax(1)


def run(n: int, seed: int, rule: str, rule_seed: int, epochs: int = 3, batch: int = 8,
        train: bool = True, tseed: int | None = None, norm: str = "orig"
        ) -> tuple[float, float, int]:
    np.random.seed(seed)
    torch.manual_seed(seed)
    images = np.random.rand(n, 28, 28).astype(np.float32)
    np.random.randint(0, 10, size=n)
    feats = ref.ComplexFeatureExtractor(True).extract_all_features(images)
    raw = ref.ComplexFeatureExtractor(False).extract_all_features(images)
    labels = rule_labels(rule, images, feats, raw, np.random.RandomState(rule_seed))
    if norm != "orig":
        if norm == "zscore":
            feats = ((raw - raw.mean(0)) / (raw.std(0) + 1e-8)).astype(np.float32)
        elif norm == "none":
            feats = raw
        else:
            feats = (raw / (np.median(np.linalg.norm(raw, axis=1)) + 1e-8)).astype(np.float32)
    order = np.random.permutation(n)
    tr, te = order[:int(0.8 * n)], order[int(0.8 * n):]
    if tseed is not None:
        torch.manual_seed(tseed)
    model = ref.ComplexNN(13, 128, 10)
    trainer = ref.Trainer(model, lr=0.001)
    for _ in range(epochs):
        model.train()
        shuffle = ref.shuffled_order(len(tr))
        x = ref.noisy(feats[tr][shuffle])
        if train:
            trainer.train_epoch(x, labels[tr][shuffle].astype(np.int64), batch)
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(ref.noisy(feats[te]))).argmax(1).numpy()
    cheat = brightness_labels(images)[te]
    return ((predicted == labels[te]).mean(), (cheat == labels[te]).mean(),
            int(np.bincount(labels, minlength=10).min()))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    seeds = list(range(10, 10 + (int(sys.argv[2]) if len(sys.argv) > 2 else 8)))
    rules = sys.argv[3].split(",") if len(sys.argv) > 3 else ["bright", "lin", "teacher"]
    torch.set_num_threads(1)
    for rule in rules:
        results: dict[str, list[float]] = {k: [] for k in VARIANTS}
        cheats, smallest = [], []
        for s in seeds:
            for name, change in VARIANTS.items():
                change = {**change, "tseed": s + 7777} if "tseed" in change else change
                acc, cheat, least = run(n, s, rule, s * 31 + 5, **change)
                results[name].append(acc)
            cheats.append(cheat)
            smallest.append(least)
        base = np.array(results["orig"])
        print(f"== {rule}: orig mean {base.mean():.3f} sd {base.std():.3f}; brightness-cheat "
              f"acc {np.mean(cheats):.3f}; min class count {min(smallest)}")
        for name in VARIANTS:
            gap = np.array(results[name]) - base
            print(f"  {name:<11} mean acc {np.mean(results[name]):.3f}  gap mean "
                  f"{gap.mean():+.3f} min {gap.min():+.3f} max {gap.max():+.3f} "
                  f"sd {gap.std():.3f}", flush=True)


if __name__ == "__main__":
    main()
