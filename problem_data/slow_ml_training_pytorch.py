"""A deliberately slow PyTorch pipeline: the task agents are asked to speed up.

Every slow part here is slow on purpose: the eight features are computed with Python
loops over every pixel and over each quadrant of every image, the per-column
normalisation is written as loops, and the small network is trained one sample at a
time.  Run it directly to see the output contract the grader relies on.
"""

import time

import numpy as np
import torch
import torch.nn as nn


def generate_synthetic_data(n_samples=2000, seed=42):
    """Random 28x28 images in [0, 1); an image's label is 1 when its mean is above 0.5."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    images = np.random.rand(n_samples, 28, 28).astype(np.float32)
    labels = (images.mean(axis=(1, 2)) > 0.5).astype(np.int64)
    return images, labels


class SlowFeatureExtractor:
    """Four whole-image statistics and a texture measure of each quadrant, pixel by
    pixel, then each column scaled to mean 0 and standard deviation 1."""

    def extract_features(self, images):
        features = np.zeros((len(images), 8), dtype=np.float32)
        for k, img in enumerate(images):
            height, width = img.shape
            n_pixels = height * width

            total = 0.0
            for i in range(height):
                for j in range(width):
                    total += float(img[i, j])
            mean = total / n_pixels

            squares = 0.0
            for i in range(height):
                for j in range(width):
                    squares += (float(img[i, j]) - mean) ** 2
            std = (squares / n_pixels) ** 0.5

            max_val = float(img[0, 0])
            min_val = float(img[0, 0])
            for i in range(height):
                for j in range(width):
                    value = float(img[i, j])
                    if value > max_val:
                        max_val = value
                    if value < min_val:
                        min_val = value

            # For each quadrant: how far its pixels are, on average, from the median of
            # their 3x3 window (pixels whose window fits in the image).
            quadrants = []
            half_h, half_w = height // 2, width // 2
            for top in (0, half_h):
                for left in (0, half_w):
                    deviation = 0.0
                    count = 0
                    for i in range(max(top, 1), min(top + half_h, height - 1)):
                        for j in range(max(left, 1), min(left + half_w, width - 1)):
                            window = img[i - 1:i + 2, j - 1:j + 2]
                            deviation += abs(float(img[i, j]) - float(np.median(window)))
                            count += 1
                    quadrants.append(deviation / count)

            features[k] = [mean, std, max_val, min_val, *quadrants]
        return self.normalize(features)

    def normalize(self, features):
        """Each column to mean 0 and standard deviation 1, one element at a time."""
        n_rows, n_cols = features.shape
        normalized = np.zeros_like(features)
        for col in range(n_cols):
            total = 0.0
            for row in range(n_rows):
                total += float(features[row, col])
            mean = total / n_rows
            squares = 0.0
            for row in range(n_rows):
                squares += (float(features[row, col]) - mean) ** 2
            std = (squares / n_rows) ** 0.5
            for row in range(n_rows):
                normalized[row, col] = (float(features[row, col]) - mean) / (std + 1e-8)
        return normalized


class SimpleNN(nn.Module):
    def __init__(self, input_size=8, hidden_size=32, num_classes=2):
        super().__init__()
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))


def run_pytorch_training_pipeline():
    start_time = time.time()

    images, labels = generate_synthetic_data()
    extractor = SlowFeatureExtractor()
    features = extractor.extract_features(images)
    print(f"Feature shape: {features.shape}")

    indices = np.random.permutation(len(features))
    split = int(0.8 * len(features))
    train_idx, test_idx = indices[:split], indices[split:]
    X_train = torch.tensor(features[train_idx], dtype=torch.float32)
    y_train = torch.tensor(labels[train_idx])
    X_test = torch.tensor(features[test_idx], dtype=torch.float32)
    y_test = torch.tensor(labels[test_idx])
    print(f"Training set size: {len(X_train)}")
    print(f"Test set size: {len(X_test)}")

    model = SimpleNN(input_size=features.shape[1], hidden_size=32, num_classes=2)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)

    for epoch in range(3):
        model.train()
        total_loss = 0.0
        order = np.random.permutation(len(X_train))
        for i in order:  # one sample at a time
            optimizer.zero_grad()
            loss = criterion(model(X_train[i : i + 1]), y_train[i : i + 1])
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
        print(f"Epoch {epoch + 1}, Loss: {total_loss / len(X_train):.4f}")

    model.eval()
    with torch.no_grad():
        predicted = model(X_test).argmax(dim=1)
    accuracy = (predicted == y_test).float().mean().item()
    print(f"Test accuracy: {accuracy:.4f}")

    print(f"FINAL_TIME: {time.time() - start_time:.2f}")
    return accuracy
if __name__ == "__main__":
    run_pytorch_training_pipeline()
