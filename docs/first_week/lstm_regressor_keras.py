"""The README's LSTM regressor in Keras 3, for comparison."""
import math

import numpy as np
import keras

xs, ys = [], []
for r in range(128):
    t0 = r * 0.37
    xs.append([[math.sin(t0 + t * 0.3)] for t in range(12)])
    ys.append([math.sin(t0 + 12 * 0.3)])
x, y = np.array(xs, dtype="float32"), np.array(ys, dtype="float32")
model = keras.Sequential([keras.Input((12, 1)), keras.layers.LSTM(16), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=[keras.metrics.RootMeanSquaredError()])
history = model.fit(x, y, epochs=20, validation_split=0.2, verbose=0)
assert history.history["val_root_mean_squared_error"][-1] < 0.1
model.save("/tmp/regressor.keras")
