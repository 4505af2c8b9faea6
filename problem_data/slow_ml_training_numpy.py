"""A deliberately slow NumPy / scikit-learn pipeline: the task agents are asked to speed up.

Every slow part here is slow on purpose: each of the eight features is computed with
Python loops over every pixel of every image, three of them from a NumPy call or a
Sobel filter on each pixel's 3x3 window.  The model is a scikit-learn random
forest, fitted once.  Run it directly to see the output contract the grader relies on.
"""

import time

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split


def generate_synthetic_data(n_samples=1000, seed=42):
    """Random 28x28 images in [0, 1); an image's label is 1 when its mean is above 0.5."""
    np.random.seed(seed)
    images = np.random.rand(n_samples, 28, 28).astype(np.float32)
    labels = (images.mean(axis=(1, 2)) > 0.5).astype(np.int64)
    return images, labels


class SlowFeatureExtractor:
    """Eight statistics of each image, computed one pixel (or one 3x3 window) at a time."""

    def extract_features(self, images):
        features = []
        for img in images:
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

            # Around every interior pixel: the contrast of its 3x3 window, how far it is
            # from the window's median, and whether a Sobel edge passes through it.
            contrast = 0.0
            deviation = 0.0
            edges = 0
            for i in range(1, height - 1):
                for j in range(1, width - 1):
                    window = img[i - 1:i + 2, j - 1:j + 2]
                    contrast += float(np.std(window))
                    deviation += abs(float(img[i, j]) - float(np.median(window)))
                    gx = (float(img[i - 1, j + 1]) + 2 * float(img[i, j + 1])
                          + float(img[i + 1, j + 1]) - float(img[i - 1, j - 1])
                          - 2 * float(img[i, j - 1]) - float(img[i + 1, j - 1]))
                    gy = (float(img[i + 1, j - 1]) + 2 * float(img[i + 1, j])
                          + float(img[i + 1, j + 1]) - float(img[i - 1, j - 1])
                          - 2 * float(img[i - 1, j]) - float(img[i - 1, j + 1]))
                    if (gx * gx + gy * gy) ** 0.5 > 1.0:
                        edges += 1
            interior = (height - 2) * (width - 2)

            bright = 0
            for i in range(height):
                for j in range(width):
                    if float(img[i, j]) > 0.5:
                        bright += 1

            features.append([mean, std, max_val, min_val, contrast / interior,
                             deviation / interior, edges / interior, bright / n_pixels])
        return np.array(features, dtype=np.float32)


def run_numpy_training_pipeline():
    start_time = time.time()

    images, labels = generate_synthetic_data()
    extractor = SlowFeatureExtractor()
    features = extractor.extract_features(images)
    print(f"Feature shape: {features.shape}")

    X_train, X_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.2, random_state=42)
    print(f"Training set size: {len(X_train)}")
    print(f"Test set size: {len(X_test)}")

    model = RandomForestClassifier(n_estimators=100, random_state=42)
    model.fit(X_train, y_train)
    predictions = model.predict(X_test)
    accuracy = float(np.mean(predictions == y_test))
    print(f"Test accuracy: {accuracy:.4f}")

    print(f"FINAL_TIME: {time.time() - start_time:.2f}")
    return accuracy


if __name__ == "__main__":
    run_numpy_training_pipeline()
