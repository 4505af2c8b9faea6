"""Fresh, learnable data for every timed execution, and the labels the candidate never sees.

The slow pipeline draws random images with random labels from a fixed seed, so anything
about its data can be computed ahead of time and its accuracy sits at chance.  Instead,
each execution gets a data set drawn by the grader from a fresh seed it never shows the
agent, injected through the pipeline's own ``generate_synthetic_data``:

- the **images** are the original's draws for that seed (``np.random.rand`` after
  ``np.random.seed(seed)``; the original's label draw is still made, so every random
  draw after it, the split, the noise, the initial weights and the dropout masks,
  follows the original's stream);
- the **labels** depend on the images: the decile of each image's mean brightness
  among the data set's images, under a class order of its own for every data set
  (derived from the seed, which the execution never sees), so that no fixed
  brightness-to-class table answers the test rows.  A data set can be *relabelled*:
  the same images under another class order (``labelling``), so that a grading can
  show that the features depend on the images alone.  The original pipeline learns them
  well above chance (about 0.36 against 0.10 at full size: ``benchmarks/README.md``);
- on the rows of the test split (which the harness derives from the same stream) the
  candidate is handed random labels instead.  Their true labels stay in the harness: the
  model's eval-mode predictions on those rows are scored against them, so no quality
  can be had without learning from the training rows.

``probe_inputs`` are the strict mode's inputs for checking each component on its own.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import numpy as np

N_CLASSES = 10
IMAGE_SIZE = 28
TEST_FRACTION = 0.2
PROBE_ROWS = 64  # rows of each strict-mode probe (images, model inputs, activations)
_DECOY_STREAM = 0x5EED  # labels handed out on the test rows come from another stream
_ORDER_STREAM = 0xC1A55  # and each data set's class order from a third
_RELABEL_STEP = 0x9E3779B1  # another labelling of the same images: another order


def draw_seed() -> int:
    """A seed the agent cannot guess (tests replace this to pin seeds)."""
    return secrets.randbelow(2**31 - 1) + 1


@dataclass(frozen=True)
class DataSet:
    """One execution's data, as the harness knows it."""

    seed: int
    n_samples: int
    labelling: int  # 0: the seed's own class order; k > 0: the same images relabelled
    visible_labels: list[int] = field(repr=False)  # what the pipeline is given
    test_rows: list[int] = field(repr=False)  # indices of the test split, in test order
    hidden_test_labels: list[int] = field(repr=False)  # the true labels of those rows

    @property
    def key(self) -> tuple[int, int]:
        """Which data set it is: its images (the seed) and their labels."""
        return self.seed, self.labelling

    def job(self) -> dict:
        """What the execution needs: the seed and the labels it is handed."""
        return {"seed": self.seed, "n_samples": self.n_samples, "labelling": self.labelling,
                "labels": self.visible_labels}

    def accuracy(self, predictions: list[int] | None) -> float | None:
        """Eval-mode predictions scored against the hidden labels (None if they do not
        cover the test rows)."""
        if not predictions or len(predictions) != len(self.hidden_test_labels):
            return None
        hits = sum(p == t for p, t in zip(predictions, self.hidden_test_labels, strict=True))
        return hits / len(self.hidden_test_labels)

    def visible_accuracy(self, predictions: list[int] | None) -> float | None:
        """The same predictions against the labels the pipeline was handed: what an
        honest pipeline prints as its test accuracy."""
        if not predictions or len(predictions) != len(self.test_rows):
            return None
        given = [self.visible_labels[i] for i in self.test_rows]
        return sum(p == t for p, t in zip(predictions, given, strict=True)) / len(given)


@dataclass(frozen=True)
class Recipe:
    """How a problem's original pipeline draws and splits its data, as far as the
    harness must replay it: ``n_classes`` of the learnable labels, the classes of the
    original's random label draw (``label_draw``; None when its labels are computed, not
    drawn), and its split: ``"permutation"`` (``np.random.permutation`` right after the
    data, the last ``test_fraction`` of it the test rows) or ``"sklearn"``
    (``train_test_split(..., test_size=test_fraction, random_state=split_seed)``)."""

    n_classes: int = N_CLASSES
    label_draw: int | None = N_CLASSES
    split: str = "permutation"
    test_fraction: float = TEST_FRACTION
    split_seed: int = 42
    image_shape: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)

    def test_rows(self, rng: np.random.RandomState, n_samples: int) -> np.ndarray:
        if self.split == "sklearn":
            from sklearn.model_selection import train_test_split

            return np.asarray(train_test_split(np.arange(n_samples),
                                               test_size=self.test_fraction,
                                               random_state=self.split_seed)[1])
        order = rng.permutation(n_samples)  # the original's split
        return order[int((1 - self.test_fraction) * n_samples):]


COMPLEX_RECIPE = Recipe()


def brightness_labels(images: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """The quantile (decile for 10 classes) of each image's mean brightness within its
    data set."""
    means = images.mean(axis=tuple(range(1, images.ndim)), dtype=np.float64)
    edges = np.quantile(means, np.linspace(0, 1, n_classes + 1)[1:-1])
    return np.digitize(means, edges).astype(np.int64)


def class_order(seed: int, labelling: int = 0, n_classes: int = N_CLASSES) -> np.ndarray:
    """The data set's secret class order: brightness quantile d is labelled order[d].
    Another ``labelling`` of the same images gives another order."""
    rng = np.random.RandomState(((seed ^ _ORDER_STREAM) + labelling * _RELABEL_STEP) % 2**32)
    order = rng.permutation(n_classes)
    if labelling:
        while (order == class_order(seed, 0, n_classes)).any():  # no class keeps its place
            order = rng.permutation(n_classes)
    return order


def make_dataset(seed: int, n_samples: int, labelling: int = 0,
                 recipe: Recipe = COMPLEX_RECIPE) -> DataSet:
    """The data set the original pipeline would build from ``seed``, relabelled."""
    rng = np.random.RandomState(seed)
    images = rng.rand(n_samples, *recipe.image_shape).astype(np.float32)
    if recipe.label_draw:
        rng.randint(0, recipe.label_draw, size=n_samples)  # the original's (random) labels
    test_rows = recipe.test_rows(rng, n_samples)
    k = recipe.n_classes
    labels = class_order(seed, labelling, k)[brightness_labels(images, k)]
    visible = labels.copy()
    decoys = np.random.RandomState((seed ^ _DECOY_STREAM) % 2**32)
    visible[test_rows] = decoys.randint(0, k, size=len(test_rows))
    return DataSet(seed, n_samples, labelling, visible.tolist(), test_rows.tolist(),
                   labels[test_rows].tolist())


def probe_job(seed: int, module: Any = None,
              image_shape: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)) -> dict:
    """Strict mode's probes: images for the feature extractor and, for a torch model
    (``module``, a ``problems.ml_training.probes.TorchModule``), weights of its declared shapes with
    inputs for its forward pass, and inputs for each submodule it names.  The inputs
    span negative and positive values so that every branch of an activation is
    exercised."""
    rng = np.random.RandomState(seed)

    def uniform(low: float, high: float, *shape: int) -> list:
        return rng.uniform(low, high, size=shape).astype(np.float32).tolist()

    job: dict[str, Any] = {"seed": seed, "rows": PROBE_ROWS, "image_shape": list(image_shape)}
    if module is None:
        return job
    weights = {}
    for name, shape in module.weights.items():
        bound = 1.5 / np.sqrt(shape[-1]) if len(shape) > 1 else 0.2
        weights[name] = uniform(-bound, bound, *shape)
    job.update(init=dict(module.init), weights=weights,
               model_inputs=uniform(-1.0, 1.5, PROBE_ROWS, module.inputs),
               submodules={name: uniform(-3.0, 3.0, PROBE_ROWS, width)
                           for name, width in module.submodules.items()})
    return job
