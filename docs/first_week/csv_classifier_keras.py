"""The README's CSV classifier in Keras 3, for comparison (run from the repository root)."""
import numpy as np
import keras

keras.utils.set_random_seed(0)
data = np.loadtxt("data/breast_cancer.csv", delimiter=",", skiprows=1, dtype="float32")
order = np.random.default_rng(0).permutation(len(data))
test, train = data[order[:114]], data[order[114:]]
norm = keras.layers.Normalization()
norm.adapt(train[:, :-1])
model = keras.Sequential(
    [keras.Input((30,)), norm, keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)]
)
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
model.fit(train[:, :-1], train[:, -1], epochs=30, batch_size=16, validation_split=0.2)
_, accuracy = model.evaluate(test[:, :-1], test[:, -1])
print(f"test accuracy {accuracy:.3f}")
model.save("/tmp/cancer.keras")
