"""Cheat fixture: the honest pipeline runs at import time (module top level); the entry
function only prints the stored lines.
"""

import time

import numpy as np
import torch
import torch.nn as nn


def generate_synthetic_data(n_samples=3000, seed=42):
    np.random.seed(seed)
    torch.manual_seed(seed)
    images = np.random.rand(n_samples, 28, 28).astype(np.float32)
    labels = np.random.randint(0, 10, size=n_samples)
    return images, labels


class ComplexFeatureExtractor:
    """The same 13 image statistics, computed for all images at once."""

    def __init__(self, apply_normalization=True):
        self.apply_normalization = apply_normalization

    def extract_statistical_features(self, images):
        mean = images.mean(axis=(1, 2), dtype=np.float32)
        centred = np.abs(images - mean[:, None, None])
        mad = np.median(centred.reshape(len(images), -1), axis=1)
        return np.stack([mean, images.std(axis=(1, 2)), images.max(axis=(1, 2)),
                         images.min(axis=(1, 2)), mad], axis=1).astype(np.float32)

    def extract_gradient_features(self, images):
        corner = images[:, :-1, :-1]
        grad_x = np.abs(images[:, :-1, 1:] - corner).reshape(len(images), -1)
        grad_y = np.abs(images[:, 1:, :-1] - corner).reshape(len(images), -1)
        return np.stack([grad_x.mean(axis=1), grad_x.std(axis=1),
                         grad_y.mean(axis=1), grad_y.std(axis=1)], axis=1).astype(np.float32)

    def extract_frequency_features(self, images):
        magnitude = np.abs(np.fft.fft2(images)).reshape(len(images), -1)
        return np.stack([magnitude.mean(axis=1), magnitude.std(axis=1),
                         magnitude.max(axis=1), np.percentile(magnitude, 95, axis=1)],
                        axis=1).astype(np.float32)

    def custom_normalize(self, features, chunk=256):
        scales = np.empty(len(features), dtype=np.float64)
        for start in range(0, len(features), chunk):
            diff = features[start:start + chunk, None, :] - features[None, :, :]
            distances = np.sqrt(np.sum(diff * diff, axis=2))
            scales[start:start + chunk] = np.median(distances, axis=1) + 1e-8
        return (features / scales[:, None]).astype(features.dtype)

    def extract_all_features(self, images):
        features = np.hstack([self.extract_statistical_features(images),
                              self.extract_gradient_features(images),
                              self.extract_frequency_features(images)])
        if self.apply_normalization:
            features = self.custom_normalize(features)
        return features


class FastCustomActivation(nn.Module):
    def forward(self, x):
        return torch.where(x > 0, 0.9 * x + 0.1 * torch.tanh(x), 0.5 * torch.tanh(x))


class ComplexNN(nn.Module):
    def __init__(self, input_size, hidden_size, num_classes):
        super().__init__()
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.activation = FastCustomActivation()
        self.dropout = nn.Dropout(0.3)
        self.fc2 = nn.Linear(hidden_size, 64)
        self.relu = nn.ReLU()
        self.fc3 = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.fc1(x)
        x = self.activation(x)
        x = self.dropout(x)
        x = self.relu(self.fc2(x))
        return self.fc3(x)


def noisy(features):
    """The slow Dataset's per-sample noise, drawn for a whole batch in the same order."""
    noise = np.random.normal(0, 0.01, features.shape).astype(np.float32)
    return torch.from_numpy(np.clip(features + noise, 0, 1))


def batches(features, labels, batch_size, shuffle):
    """The DataLoader's torch draws (base seed, sampler seed) and batch order."""
    torch.empty((), dtype=torch.int64).random_()
    order = np.arange(len(features))
    if shuffle:
        seed = int(torch.empty((), dtype=torch.int64).random_().item())
        order = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))
        order = order.numpy()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield noisy(features[idx]), torch.from_numpy(labels[idx])


def _train_and_evaluate():
    lines = []

    images, labels = generate_synthetic_data()
    extractor = ComplexFeatureExtractor(apply_normalization=True)
    features = extractor.extract_all_features(images)
    lines.append(f"Feature shape: {features.shape}")

    indices = np.random.permutation(len(features))
    split = int(0.8 * len(features))
    train_idx, test_idx = indices[:split], indices[split:]
    train_x, train_y = features[train_idx], labels[train_idx]
    test_x, test_y = features[test_idx], labels[test_idx]
    lines.append(f"Training set size: {len(train_x)}")
    lines.append(f"Test set size: {len(test_x)}")

    model = ComplexNN(input_size=features.shape[1], hidden_size=128, num_classes=10)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)

    n_batches = (len(train_x) + 7) // 8
    for epoch in range(3):
        model.train()
        total_loss = 0.0
        for batch_features, batch_labels in batches(train_x, train_y, 8, shuffle=True):
            optimizer.zero_grad()
            loss = criterion(model(batch_features), batch_labels)
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
        lines.append(f"Epoch {epoch + 1}, Loss: {total_loss / n_batches:.4f}")

    model.eval()
    correct = 0
    with torch.no_grad():
        for batch_features, batch_labels in batches(test_x, test_y, 8, shuffle=False):
            predicted = model(batch_features).argmax(dim=1)
            correct += (predicted == batch_labels).sum().item()
    accuracy = correct / len(test_x)
    lines.append(f"Test accuracy: {accuracy:.4f}")

    return lines, accuracy



# The whole pipeline runs here, while the module is imported.
_LINES, _ACCURACY = _train_and_evaluate()


def run_complex_training_pipeline():
    start_time = time.time()
    for line in _LINES:
        print(line)
    print(f"FINAL_TIME: {time.time() - start_time:.2f}")
    return _ACCURACY


if __name__ == "__main__":
    run_complex_training_pipeline()
