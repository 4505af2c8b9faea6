"""Calibration tier `vectorized`: what every seed run achieved.

The feature loops and the activation are vectorised; the normalisation is kept as the
median of vectorised pairwise distances (the seed's "Strategy 1"); the training set-up is
the original's, unchanged (DataLoader, per-sample noise, batches of 8, Adam).  The seed's
33x target stood for this tier.  Not readable by agents (problems/ is hidden).
"""

import time

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset


def generate_synthetic_data(n_samples=3000, seed=42):
    """Random 28x28 images in [0, 1) with random labels in 10 classes."""
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
        flat = images.reshape(len(images), -1)
        mean = flat.mean(axis=1)
        mad = np.median(np.abs(flat - mean[:, None]), axis=1)
        return np.stack([mean, flat.std(axis=1), flat.max(axis=1), flat.min(axis=1), mad],
                        axis=1).astype(np.float32)

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

    def custom_normalize(self, features):
        """Scale each sample by the median of its distances to every sample, with the
        pairwise distances vectorised (still O(n^2), in float64 to keep them exact)."""
        f = features.astype(np.float64)
        sq_norms = np.sum(f * f, axis=1, keepdims=True)
        distances = np.sqrt(np.maximum(sq_norms - 2 * f @ f.T + sq_norms.T, 0.0))
        scales = np.median(distances, axis=1, keepdims=True) + 1e-8
        return (f / scales).astype(features.dtype)

    def extract_all_features(self, images):
        statistical = self.extract_statistical_features(images)
        gradient = self.extract_gradient_features(images)
        frequency = self.extract_frequency_features(images)
        features = np.hstack([statistical, gradient, frequency])
        if self.apply_normalization:
            features = self.custom_normalize(features)
        return features


class SlowCustomActivation(nn.Module):
    """x > 0: 0.9x + 0.1tanh(x); otherwise 0.5tanh(x), as tensor operations."""

    def forward(self, x):
        t = torch.tanh(x)
        return torch.where(x > 0, 0.9 * x + 0.1 * t, 0.5 * t)


class ComplexNN(nn.Module):
    def __init__(self, input_size, hidden_size, num_classes):
        super().__init__()
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.activation = SlowCustomActivation()
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


class SlowDataset(Dataset):
    """Adds fresh Gaussian noise (std 0.01) to every sample it hands out."""

    def __init__(self, features, labels):
        self.features = features
        self.labels = labels

    def __len__(self):
        return len(self.features)

    def __getitem__(self, idx):
        sample = self.features[idx].copy()
        noise = np.random.normal(0, 0.01, sample.shape).astype(np.float32)
        sample = np.clip(sample + noise, 0, 1)
        return torch.tensor(sample, dtype=torch.float32), torch.tensor(self.labels[idx])


def run_complex_training_pipeline():
    start_time = time.time()

    images, labels = generate_synthetic_data()
    extractor = ComplexFeatureExtractor(apply_normalization=True)
    features = extractor.extract_all_features(images)
    print(f"Feature shape: {features.shape}")

    indices = np.random.permutation(len(features))
    split = int(0.8 * len(features))
    train_idx, test_idx = indices[:split], indices[split:]
    train_dataset = SlowDataset(features[train_idx], labels[train_idx])
    test_dataset = SlowDataset(features[test_idx], labels[test_idx])
    print(f"Training set size: {len(train_dataset)}")
    print(f"Test set size: {len(test_dataset)}")

    train_loader = DataLoader(train_dataset, batch_size=8, shuffle=True)
    test_loader = DataLoader(test_dataset, batch_size=8, shuffle=False)

    model = ComplexNN(input_size=features.shape[1], hidden_size=128, num_classes=10)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)

    for epoch in range(3):
        model.train()
        total_loss = 0.0
        for batch_features, batch_labels in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(batch_features), batch_labels)
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
        print(f"Epoch {epoch + 1}, Loss: {total_loss / len(train_loader):.4f}")

    model.eval()
    correct = 0
    total = 0
    with torch.no_grad():
        for batch_features, batch_labels in test_loader:
            predicted = model(batch_features).argmax(dim=1)
            correct += (predicted == batch_labels).sum().item()
            total += batch_labels.size(0)
    accuracy = correct / total
    print(f"Test accuracy: {accuracy:.4f}")

    print(f"FINAL_TIME: {time.time() - start_time:.2f}")
    return accuracy


if __name__ == "__main__":
    run_complex_training_pipeline()
