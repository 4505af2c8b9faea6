"""Reference solution: the complex training pipeline, made fast.

Same data, features, normalisation, split, model, training recipe, random
draws and evaluation as the deliberately slow original (it prints the same
losses and test accuracy); only the implementation changes:

* features for all images at once: vectorised NumPy, a batched real FFT
  whose mirrored half gives the full |fft2| multiset, partition-based
  medians and percentile;
* the O(n^2) normalisation selects each row's two middle distances exactly,
  but computes only the distances that can be near the median (bounds from a
  projection on the principal axis), instead of the whole n x n matrix;
* training draws each epoch's shuffle, noise and dropout masks in single
  calls (the same draws the original's DataLoader, Dataset and nn.Dropout
  make one by one).  Every batch goes forward through ``ComplexNN``, whose
  training-mode layers form one autograd node with a hand-written backward;
  ``loss.backward()`` on torch's cross-entropy fills the gradients, and
  Adam's update runs on one flat buffer holding all the parameters.
"""

import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def generate_synthetic_data(n_samples=3000, seed=42):
    """Random 28x28 images in [0, 1) with random labels in 10 classes."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    # The same stream as np.random.rand(n_samples, 28, 28), drawn in chunks so
    # that the float64 intermediate stays small (fewer fresh pages to fault in).
    images = np.empty((n_samples, 28, 28), dtype=np.float32)
    for start in range(0, n_samples, 100):
        images[start : start + 100] = np.random.rand(min(100, n_samples - start), 28, 28)
    labels = np.random.randint(0, 10, size=n_samples)
    return images, labels


def _middle_pair(rows):
    """Partition each row in place; return the order statistics that define its median.

    Returns (lower, upper): for an even row length the two middle values, for an
    odd one the middle value twice.
    """
    width = rows.shape[1]
    half = width // 2
    rows.partition(half, axis=1)
    upper = rows[:, half].copy()
    if width % 2:
        return upper, upper
    return rows[:, :half].max(axis=1), upper


def _dense_order_stats(left, right, k_lo, k_hi):
    """Order statistics k_lo <= k_hi (k_hi - k_lo <= 1) of each row of left @ right.T."""
    sq_dist = left @ right.T
    sq_dist.partition(k_hi, axis=1)
    upper = sq_dist[:, k_hi].copy()
    lower = sq_dist[:, :k_hi].max(axis=1) if k_lo < k_hi else upper
    return lower, upper


def _kth_smallest_gap(values, k):
    """For each x in the ascending array `values`: the k-th smallest |values - x| (0-based).

    Its k + 1 nearest values form a window of the sorted array; binary search
    for the window's start (all rows at once), then take the farthest end.
    """
    n = values.shape[0]
    width = k + 1
    lo = np.zeros(n, dtype=np.intp)
    hi = np.full(n, n - width, dtype=np.intp)
    while True:
        active = lo < hi
        if not active.any():
            break
        mid = (lo + hi) // 2
        move = (values - values[mid]) > (values[np.minimum(mid + width, n - 1)] - values)
        lo = np.where(active & move, mid + 1, lo)
        hi = np.where(active & ~move, mid, hi)
    return np.maximum(values - values[lo], values[lo + width - 1] - values)


def _banded_order_stats(centered, left, right, k_lo, k_hi, block=64):
    """_dense_order_stats without the n x n matrix, exact, or None if it would not pay.

    Project the rows on their principal axis: u = c . a, r = |c - u a|.  Every
    distance satisfies |u_i - u_j| <= d_ij <= sqrt((u_i - u_j)^2 + (r_i + r_j)^2),
    so with R = max r the k-th smallest distance of row i lies between the
    k-th smallest |u_i - u_j| (lo) and sqrt(that^2 + (r_i + R)^2) (hi).  Rows
    with |u_i - u_j| small enough that d_ij < lo for sure are only counted, those
    with |u_i - u_j| > hi are above; only the rest, two short runs of the
    u-sorted order, get their distances computed and sorted.
    """
    n = centered.shape[0]
    axis = np.linalg.eigh(centered.T @ centered)[1][:, -1]
    proj = centered @ axis
    norm_sq = np.einsum("ij,ij->i", centered, centered)
    resid = np.sqrt(np.maximum(norm_sq - proj * proj, 0.0))
    order = np.argsort(proj, kind="stable")
    u = proj[order]
    reach = resid[order] + resid.max()
    slack = 1e-4 * (1.0 + math.sqrt(norm_sq.max()))  # >> float32 error of a distance
    lo_d = _kth_smallest_gap(u, k_lo)
    hi_d = np.sqrt(_kth_smallest_gap(u, k_hi) ** 2 + reach**2)
    inner = np.sqrt(np.maximum(np.maximum(lo_d - slack, 0.0) ** 2 - reach**2, 0.0))
    outer = hi_d + slack
    # sorted positions: [p0, p1) and [p2, p3) are candidates, [p1, p2) surely below
    p0 = np.searchsorted(u, u - outer, "left")
    p1 = np.searchsorted(u, u - inner, "right")
    p2 = np.searchsorted(u, u + inner, "left")
    p3 = np.searchsorted(u, u + outer, "right")
    none_below = inner <= 0.0
    p1[none_below] = p0[none_below]
    p2[none_below] = p0[none_below]
    size = (p1 - p0) + (p3 - p2)
    if size.mean() > n / 8:
        return None
    rank_lo, rank_hi = k_lo - (p2 - p1), k_hi - (p2 - p1)
    left_s, right_s = left[order], right[order]
    lower = np.empty(n, dtype=np.float32)
    upper = np.empty(n, dtype=np.float32)
    for q0 in range(0, n, block):
        q1 = min(q0 + block, n)
        a0, a1 = p0[q0:q1].min(), p1[q0:q1].max()
        b0, b1 = p2[q0:q1].min(), p3[q0:q1].max()
        if a1 >= b0:
            cols = np.arange(a0, max(a1, b1))
        else:
            cols = np.concatenate([np.arange(a0, a1), np.arange(b0, b1)])
        sq_dist = left_s[q0:q1] @ right_s[cols].T
        c = cols[None, :]
        candidate = (c >= p0[q0:q1, None]) & (c < p1[q0:q1, None])
        candidate |= (c >= p2[q0:q1, None]) & (c < p3[q0:q1, None])
        np.putmask(sq_dist, ~candidate, np.inf)
        sq_dist.sort(axis=1)
        rows = np.arange(q1 - q0)
        last = cols.size - 1
        lower[q0:q1] = sq_dist[rows, np.clip(rank_lo[q0:q1], 0, last)]
        upper[q0:q1] = sq_dist[rows, np.clip(rank_hi[q0:q1], 0, last)]
    # The bounds guarantee 0 <= rank < size; recompute any row where they did not hold.
    bad = np.flatnonzero((rank_lo < 0) | (rank_hi >= size))
    if bad.size:
        lower[bad], upper[bad] = _dense_order_stats(left_s[bad], right_s, k_lo, k_hi)
    result_lower = np.empty_like(lower)
    result_upper = np.empty_like(upper)
    result_lower[order] = lower
    result_upper[order] = upper
    return result_lower, result_upper


def _top_values(rows, k):
    """The k largest values of each row (unordered); all of them if k >= width."""
    width = rows.shape[1]
    if k >= width:
        return rows
    return np.partition(rows, width - k, axis=1)[:, width - k :]


class ComplexFeatureExtractor:
    """The 13 hand-written image statistics, computed for all images at once."""

    def __init__(self, apply_normalization=True):
        self.apply_normalization = apply_normalization

    @staticmethod
    def _as_batch(images):
        return np.ascontiguousarray(images, dtype=np.float32)

    def extract_statistical_features(self, images):
        imgs = self._as_batch(images)
        flat = imgs.reshape(imgs.shape[0], -1)
        mean = flat.mean(axis=1)
        deviation = flat - mean[:, None]
        np.abs(deviation, out=deviation)
        std = np.sqrt(np.einsum("ij,ij->i", deviation, deviation) / np.float32(flat.shape[1]))
        max_val = flat.max(axis=1)
        min_val = flat.min(axis=1)
        lower, upper = _middle_pair(deviation)
        mad = (lower + upper) * np.float32(0.5)
        return np.stack([mean, std, max_val, min_val, mad], axis=1).astype(np.float32)

    def extract_gradient_features(self, images):
        imgs = self._as_batch(images)
        n, height, width = imgs.shape
        pixels = torch.from_numpy(imgs)
        # The loops visit i, j in range(h - 1) x range(w - 1) for both directions.
        anchor = pixels[:, : height - 1, : width - 1]
        grad = np.empty((n, height - 1, width - 1), dtype=np.float32)  # NumPy-owned buffer
        flat = grad.reshape(n, -1)
        columns = []
        for neighbour in (pixels[:, : height - 1, 1:], pixels[:, 1:, : width - 1]):
            torch.sub(neighbour, anchor, out=torch.from_numpy(grad)).abs_()
            mean = flat.mean(axis=1)
            centred = flat - mean[:, None]
            std = np.sqrt(np.einsum("ij,ij->i", centred, centred) / np.float32(flat.shape[1]))
            columns += [mean, std]
        return np.stack(columns, axis=1).astype(np.float32)

    def extract_frequency_features(self, images):
        imgs = self._as_batch(images)
        n, height, width = imgs.shape
        count = height * width
        # |fft2| of a real image is symmetric: column w - l holds the same values
        # as column l (rows mirrored).  So the h * w magnitudes are the real-FFT
        # columns 1 .. (w - 1) // 2 counted twice and the others once.
        spectrum = np.empty((n, height, width // 2 + 1), dtype=np.complex64)
        torch.fft.rfft2(torch.from_numpy(imgs), out=torch.from_numpy(spectrum))
        half = np.abs(spectrum)
        # The DC bin is the image sum and usually the largest magnitude, and the
        # normalisation amplifies its rounding.  NumPy's float32 FFT returns the
        # correctly rounded 1-D transforms (rows, then columns), so form the DC
        # bin the same way: float64 row sums rounded to float32, then their
        # float64 sum rounded to float32.
        row_sums = np.einsum("ijk->ij", imgs, dtype=np.float64).astype(np.float32)
        half[:, 0, 0] = np.abs(row_sums.sum(axis=1, dtype=np.float64).astype(np.float32))
        paired = (width + 1) // 2
        twice = half[:, :, 1:paired].reshape(n, -1)
        once = np.concatenate([half[:, :, :1], half[:, :, paired:]], axis=2).reshape(n, -1)
        flat = half.reshape(n, -1)
        total = flat.sum(axis=1, dtype=np.float64) + twice.sum(axis=1, dtype=np.float64)
        total_sq = np.einsum("ij,ij->i", flat, flat) + np.einsum("ij,ij->i", twice, twice)
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
        max_val = flat.max(axis=1)
        # np.percentile(..., 95): linear interpolation between the order
        # statistics `low` and `low + 1`, i.e. the top-`need` values matter.
        # They are among the top ceil(need / 2) paired values (each counted
        # twice) and the top `need` single ones, so select from that short list.
        position = 0.95 * (count - 1)
        low = int(math.floor(position))
        frac = position - low
        need = count - low
        top_twice = _top_values(twice, (need + 1) // 2)
        shortlist = np.concatenate([top_twice, top_twice, _top_values(once, need)], axis=1)
        at = shortlist.shape[1] - need
        shortlist.partition(at, axis=1)
        below = shortlist[:, at]
        above = shortlist[:, at + 1 :].min(axis=1) if need > 1 else below
        p95 = above - (above - below) * np.float32(1.0 - frac)
        return np.stack([mean, std, max_val, p95], axis=1).astype(np.float32)

    def custom_normalize(self, features):
        """Divide each sample by the median of its distances to all samples (itself included)."""
        feats = np.ascontiguousarray(features, dtype=np.float32)
        n, dim = feats.shape
        # Squared distances as products [c, |c|^2, 1] . [-2c, 1, |c|^2] of
        # centred rows (centring keeps the float32 cancellation error tiny).
        centered64 = feats - feats.mean(axis=0, dtype=np.float64)
        centered = centered64.astype(np.float32)
        sq_norm = np.einsum("ij,ij->i", centered, centered)
        left = np.empty((n, dim + 2), dtype=np.float32)
        right = np.empty((n, dim + 2), dtype=np.float32)
        left[:, :dim] = centered
        left[:, dim] = sq_norm
        left[:, dim + 1] = 1.0
        right[:, :dim] = centered * np.float32(-2.0)
        right[:, dim] = 1.0
        right[:, dim + 1] = sq_norm
        # The median of a row averages its order statistics k_lo and k_hi;
        # distances are monotone in squared distances, so select on the squares.
        k_lo, k_hi = (n - 1) // 2, n // 2
        stats = _banded_order_stats(centered64, left, right, k_lo, k_hi) if n >= 64 else None
        if stats is None:
            stats = _dense_order_stats(left, right, k_lo, k_hi)
        lower, upper = (np.sqrt(np.maximum(v, 0.0)) for v in stats)
        scale = (lower + upper) * np.float32(0.5) + np.float32(1e-8)
        return feats / scale[:, None]

    def extract_all_features(self, images):
        statistical = self.extract_statistical_features(images)
        gradient = self.extract_gradient_features(images)
        frequency = self.extract_frequency_features(images)
        features = np.hstack([statistical, gradient, frequency])
        if self.apply_normalization:
            features = self.custom_normalize(features)
        return features


class CustomActivation(nn.Module):
    """x > 0: 0.9x + 0.1tanh(x); otherwise 0.5tanh(x), as tensor operations."""

    def forward(self, x):
        t = torch.tanh(x)
        return torch.where(x > 0, 0.9 * x + 0.1 * t, 0.5 * t)


class ComplexNN(nn.Module):
    def __init__(self, input_size, hidden_size, num_classes):
        super().__init__()
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.activation = CustomActivation()
        self.dropout = nn.Dropout(0.3)
        self.fc2 = nn.Linear(hidden_size, 64)
        self.relu = nn.ReLU()
        self.fc3 = nn.Linear(64, num_classes)
        # Set by Trainer while it trains the model.
        self.trainer = None

    def forward(self, x):
        trainer = self.trainer
        if trainer is None or not self.training:
            x = self.activation(self.fc1(x))
            x = self.dropout(x)
            x = self.relu(self.fc2(x))
            return self.fc3(x)
        # Training under Trainer: the same layers as a single autograd node
        # (_MLPFunction) with a hand-written backward; trainer.params are this
        # model's own parameters, fc1.weight .. fc3.bias.
        return _MLPFunction.apply(x, trainer, *trainer.params)


class _MLPFunction(torch.autograd.Function):
    """ComplexNN's training-mode layers as one autograd node, in NumPy.

    forward: fc1 -> activation -> dropout (the trainer's next masks) -> fc2 ->
    ReLU -> fc3, on NumPy views that share memory with the parameters.  The
    activation is max(0.9x + 0.1tanh(x), 0.5tanh(x)): the same value as the
    where() form, since for x > 0 the first branch is the larger and for
    x <= 0 the second (both are 0 at x = 0).  backward: the gradients of the
    six parameters (autograd accumulates them into their .grad).
    """

    @staticmethod
    def forward(ctx, x, trainer, *params):
        # params (fc1.weight .. fc3.bias) are inputs so that autograd routes
        # their gradients; the arithmetic uses the trainer's NumPy views of them.
        w1t, b1, w2t, b2, w3t, b3 = trainer.arrays
        tenth, nine_tenths, half = trainer.constants[1:]
        x = x.detach().numpy()
        keep = trainer.next_keep(x.shape[0])
        z1 = np.dot(x, w1t)
        z1 += b1
        t = np.tanh(z1)
        z1 *= nine_tenths
        z1 += t * tenth
        hidden = np.maximum(z1, t * half)
        hidden *= keep
        h2 = np.dot(hidden, w2t)
        h2 += b2
        np.maximum(h2, 0, out=h2)
        logits = np.dot(h2, w3t)
        logits += b3
        ctx.trainer = trainer
        ctx.activations = (x, keep, t, hidden, h2)
        return torch.from_numpy(logits)

    @staticmethod
    def backward(ctx, grad_logits):
        grads = ctx.trainer.parameter_gradients(grad_logits.numpy(), *ctx.activations)
        return (None, None, *grads)


class Trainer:
    """Mini-batch training of ComplexNN: cross-entropy, backprop, Adam.

    Each batch runs forward through the model, the loss is torch's
    cross-entropy and `loss.backward()` carries its gradient through the
    model's output into _MLPFunction.backward, which computes the parameter
    gradients into one flat buffer.  The update is torch.optim.Adam's default
    single-tensor algorithm (first moment by lerp, bias corrections, eps added
    after dividing by sqrt(bias_correction2)), applied with NumPy to the flat
    buffer that every parameter is a view of.  Dropout masks come from one
    bernoulli_ draw per epoch on torch's global generator (the same draws
    nn.Dropout makes batch by batch).
    """

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.model = model
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.p_drop = model.dropout.p
        self.params = list(model.parameters())
        total = sum(p.numel() for p in self.params)
        flat = torch.empty(total, dtype=torch.float32)
        self.flat_grad = np.zeros(total, dtype=np.float32)
        self.grads = []
        offset = 0
        for p in self.params:
            size = p.numel()
            flat[offset : offset + size].copy_(p.detach().reshape(-1))
            p.data = flat[offset : offset + size].view_as(p)
            self.grads.append(self.flat_grad[offset : offset + size].reshape(tuple(p.shape)))
            offset += size
        self.flat_param = flat.numpy()
        self.exp_avg = np.zeros(total, dtype=np.float32)
        self.exp_avg_sq = np.zeros(total, dtype=np.float32)
        self.scratch = np.empty(total, dtype=np.float32)
        w1, b1, w2, b2, w3, b3 = (p.detach().numpy() for p in self.params)
        self.arrays = (w1.T, b1, w2.T, b2, w3.T, b3)  # share memory: follow every update
        self.constants = tuple(np.float32(c) for c in (1.0, 0.1, 0.9, 0.5))
        self.ones = {}
        self.keep = np.empty((0, w1.shape[0]), dtype=np.float32)
        self.keep_used = 0
        self.step_count = 0

    def draw_keep(self, rows):
        """Dropout masks (0 or 1 / (1 - p)) for the next `rows` samples, in one draw."""
        keep = torch.empty(rows, self.keep.shape[1]).bernoulli_(1.0 - self.p_drop)
        self.keep = keep.div_(1.0 - self.p_drop).numpy()
        self.keep_used = 0

    def next_keep(self, rows):
        if self.keep_used + rows > self.keep.shape[0]:
            self.draw_keep(rows)
        start = self.keep_used
        self.keep_used = start + rows
        return self.keep[start : start + rows]

    def parameter_gradients(self, g3, x, keep, t, hidden, h2):
        """Backprop d(loss)/d(logits) through fc3, ReLU, fc2, dropout, activation, fc1."""
        g_w1, g_b1, g_w2, g_b2, g_w3, g_b3 = self.grads
        w2t, w3t = self.arrays[2], self.arrays[4]
        ones = self.ones.get(g3.shape[0])  # batch sums as products with a ones vector
        if ones is None:
            ones = self.ones[g3.shape[0]] = np.ones(g3.shape[0], dtype=np.float32)
        dot = np.dot
        dot(g3.T, h2, out=g_w3)
        dot(ones, g3, out=g_b3)
        g2 = dot(g3, w3t.T)
        g2 *= np.sign(h2)  # ReLU: h2 > 0 exactly where sign(h2) = 1
        dot(g2.T, hidden, out=g_w2)
        dot(ones, g2, out=g_b2)
        g1 = dot(g2, w2t.T)
        g1 *= keep
        # activation': 0.9 + 0.1(1 - t^2) = 1 - 0.1t^2 if x > 0, else 0.5(1 - t^2)
        one, tenth, _, half = self.constants
        sq = t * t
        g1 *= np.where(t > 0, one - tenth * sq, half - half * sq)
        dot(g1.T, x, out=g_w1)
        dot(ones, g1, out=g_b1)
        return [torch.from_numpy(g) for g in self.grads]

    def train_epoch(self, inputs, targets, batch_size):
        """One pass over (inputs, targets) in the given order; returns the mean batch loss."""
        model = self.model
        # this epoch's dropout masks, drawn where the original draws its first batch's
        self.draw_keep(inputs.shape[0])
        batches = zip(
            torch.from_numpy(inputs).split(batch_size),
            torch.from_numpy(targets).split(batch_size),
            strict=True,
        )
        params = self.params
        param, grad = self.flat_param, self.flat_grad
        m, v, tmp = self.exp_avg, self.exp_avg_sq, self.scratch
        beta1, beta2, lr, eps = self.beta1, self.beta2, self.lr, self.eps
        one_m_beta1, one_m_beta2 = 1.0 - beta1, 1.0 - beta2
        subtract, multiply, divide, add, sqrt = np.subtract, np.multiply, np.divide, np.add, np.sqrt
        cross_entropy = F.cross_entropy
        losses = []
        model.trainer = self
        for batch, labels in batches:
            for p in params:
                p.grad = None
            loss = cross_entropy(model(batch), labels)
            loss.backward()
            losses.append(loss.detach())
            # Adam, on the flat buffers (grad holds every parameter's gradient)
            self.step_count += 1
            step = self.step_count
            step_size = lr / (1.0 - beta1**step)
            bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
            subtract(grad, m, out=tmp)
            multiply(tmp, one_m_beta1, out=tmp)
            add(m, tmp, out=m)
            multiply(v, beta2, out=v)
            multiply(grad, grad, out=tmp)
            multiply(tmp, one_m_beta2, out=tmp)
            add(v, tmp, out=v)
            sqrt(v, out=tmp)
            divide(tmp, bias_correction2_sqrt, out=tmp)
            add(tmp, eps, out=tmp)
            divide(m, tmp, out=tmp)
            multiply(tmp, step_size, out=tmp)
            subtract(param, tmp, out=param)
        model.trainer = None
        # the original prints the mean over batches of the batch-mean loss
        return torch.stack(losses).double().mean().item()


def shuffled_order(n):
    """The order a shuffling DataLoader visits n samples in.

    Same draws from torch's global generator as DataLoader(shuffle=True): one
    for the iterator's base seed, one seeding the sampler's own generator.
    """
    torch.empty((), dtype=torch.int64).random_()
    seed = int(torch.empty((), dtype=torch.int64).random_().item())
    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.randperm(n, generator=generator).numpy()


def noisy(features, std=0.01):
    """Fresh N(0, std) noise on every row, then clipped to [0, 1], as the original's Dataset."""
    noise = np.random.normal(0, std, features.shape).astype(np.float32)
    return np.clip(features + noise, 0, 1)


def run_complex_training_pipeline():
    start_time = time.time()

    images, labels = generate_synthetic_data()
    extractor = ComplexFeatureExtractor(apply_normalization=True)
    features = extractor.extract_all_features(images)
    print(f"Feature shape: {features.shape}")

    indices = np.random.permutation(len(features))
    split = int(0.8 * len(features))
    train_idx, test_idx = indices[:split], indices[split:]
    train_x, train_y = features[train_idx], labels[train_idx]
    test_x, test_y = features[test_idx], labels[test_idx]
    print(f"Training set size: {len(train_x)}")
    print(f"Test set size: {len(test_x)}")

    model = ComplexNN(input_size=features.shape[1], hidden_size=128, num_classes=10)
    trainer = Trainer(model, lr=0.001)
    batch_size = 8

    for epoch in range(3):
        model.train()
        # Shuffle, then give every drawn sample fresh noise (one draw per epoch).
        order = shuffled_order(len(train_x))
        epoch_x = noisy(train_x[order])
        epoch_y = train_y[order]
        loss = trainer.train_epoch(epoch_x, epoch_y, batch_size)
        print(f"Epoch {epoch + 1}, Loss: {loss:.4f}")

    model.eval()
    with torch.no_grad():
        test_inputs = torch.from_numpy(noisy(test_x))
        predicted = model(test_inputs).argmax(dim=1).numpy()
    correct = int((predicted == test_y).sum())
    accuracy = correct / len(test_y)
    print(f"Test accuracy: {accuracy:.4f}")

    print(f"FINAL_TIME: {time.time() - start_time:.2f}")
    return accuracy


if __name__ == "__main__":
    run_complex_training_pipeline()
