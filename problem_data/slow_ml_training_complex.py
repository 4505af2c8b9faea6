"""A deliberately slow training pipeline: the task agents are asked to speed up.

Every slow part here is slow on purpose: per-sample Python loops in feature
extraction, an O(n^2) normalisation written as a double loop, an activation
that walks its tensor element by element with ``.item()``, and a DataLoader
that draws batches of 8 one sample at a time.  Run it directly to see the
output contract the grader relies on.
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
    """Hand-written image statistics, computed one sample at a time."""

    def __init__(self, apply_normalization=True):
        self.apply_normalization = apply_normalization

    def extract_statistical_features(self, images):
        features = []
        for img in images:
            mean = np.mean(img)
            std = np.std(img)
            max_val = np.max(img)
            min_val = np.min(img)
            mad = np.median(np.abs(img - mean))
            features.append([mean, std, max_val, min_val, mad])
        return np.array(features, dtype=np.float32)

    def extract_gradient_features(self, images):
        features = []
        for img in images:
            grad_x = []
            grad_y = []
            for i in range(img.shape[0] - 1):
                for j in range(img.shape[1] - 1):
                    grad_x.append(abs(img[i, j + 1] - img[i, j]))
                    grad_y.append(abs(img[i + 1, j] - img[i, j]))
            features.append([np.mean(grad_x), np.std(grad_x), np.mean(grad_y), np.std(grad_y)])
        return np.array(features, dtype=np.float32)

    def extract_frequency_features(self, images):
        features = []
        for img in images:
            magnitude = np.abs(np.fft.fft2(img))
            features.append(
                [
                    np.mean(magnitude),
                    np.std(magnitude),
                    np.max(magnitude),
                    np.percentile(magnitude, 95),
                ]
            )
        return np.array(features, dtype=np.float32)

    def custom_normalize(self, features):
        """Scale each sample by the median of its distances to every sample: O(n^2)."""
        n_samples = features.shape[0]
        normalized = np.zeros_like(features)
        for i in range(n_samples):
            distances = []
            for j in range(n_samples):
                diff = features[i] - features[j]
                distances.append(np.sqrt(np.sum(diff * diff)))
            scale = np.median(distances) + 1e-8
            normalized[i] = features[i] / scale
        return normalized

    def extract_all_features(self, images):
        statistical = self.extract_statistical_features(images)
        gradient = self.extract_gradient_features(images)
        frequency = self.extract_frequency_features(images)
        features = np.hstack([statistical, gradient, frequency])
        if self.apply_normalization:
            features = self.custom_normalize(features)
        return features


class SlowCustomActivation(nn.Module):
    """x > 0: 0.9x + 0.1tanh(x); otherwise 0.5tanh(x), one element at a time."""

    def forward(self, x):
        output = torch.zeros_like(x)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                value = x[i, j].item()
                if value > 0:
                    output[i, j] = 0.9 * x[i, j] + 0.1 * torch.tanh(x[i, j])
                else:
                    output[i, j] = 0.5 * torch.tanh(x[i, j])
        return output


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
