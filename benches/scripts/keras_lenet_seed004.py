"""Seed 004's LeNet (ten sigmoid outputs, sparse_categorical_crossentropy, SGD 0.9, batch 32) in
Keras on MNIST: the reference for `cnnc train models/lenet5.yaml --data data/mnist`'s loss curve
(Keras renormalises crossentropy on probabilities; its first epochs sit at ln 10 = 2.30).

Run with the peers' TensorFlow (../shared/peers installs it), on IDX files plain or gzipped:
    EPOCHS=5 MNIST_DIR=data/mnist /work/peers-cache/venv/bin/python benches/scripts/keras_lenet_seed004.py
"""
import gzip
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf


def idx(stem):
    d = os.environ["MNIST_DIR"]
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        path = os.path.join(d, name)
        if os.path.exists(path):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rb") as f:
                data = f.read()
            nd = data[3]
            dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(nd)]
            return np.frombuffer(data, np.uint8, offset=4 + 4 * nd).reshape(dims)
    raise FileNotFoundError(f"{stem} in {d}")


x = idx("train-images-idx3-ubyte").astype("float32")[..., None] / 255.0
y = idx("train-labels-idx1-ubyte").astype("int32")
xt = idx("t10k-images-idx3-ubyte").astype("float32")[..., None] / 255.0
yt = idx("t10k-labels-idx1-ubyte").astype("int32")
net = tf.keras.models.Sequential([
    tf.keras.layers.Conv2D(filters=6, kernel_size=5, activation="sigmoid", input_shape=(28, 28, 1)),
    tf.keras.layers.MaxPool2D(pool_size=2, strides=2),
    tf.keras.layers.Conv2D(filters=16, kernel_size=5, activation="sigmoid"),
    tf.keras.layers.MaxPool2D(pool_size=2, strides=2),
    tf.keras.layers.Flatten(),
    tf.keras.layers.Dense(120, activation="sigmoid"),
    tf.keras.layers.Dense(84, activation="sigmoid"),
    tf.keras.layers.Dense(10, activation="sigmoid"),
])
net.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=0.9, momentum=0.0, nesterov=False),
            loss="sparse_categorical_crossentropy", metrics=["accuracy"])
net.fit(x, y, epochs=int(os.environ.get("EPOCHS", "5")), validation_split=0.1, verbose=2)
print("test loss, accuracy:", net.evaluate(xt, yt, verbose=0))
