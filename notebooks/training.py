"""Cells of training.ipynb: compile, fit, evaluate and predict on generated data.
`python notebooks/make_notebooks.py` writes the notebook from this list."""

TITLE = "Training a model: compile, fit, evaluate, predict"

CELLS = [
    (
        "md",
        """
# Training a model: `compile`, `fit`, `evaluate`, `predict`

jmod models train the way Keras models do: `compile` picks the optimizer
(any [optax](https://optax.readthedocs.io) transformation), the loss and the
metrics; `fit` runs the training loop with a progress display, validation and
callbacks; `evaluate` and `predict` run the model on new data. Each training
step (forward pass, gradients, optimizer update, metrics) is one compiled
`jmod.jit` computation.

The data is generated here, so the notebook runs anywhere in a few seconds on
a CPU.
""",
    ),
    ("md", "## Setup"),
    (
        "code",
        """
import numpy as np

import jmod

jmod.random.set_seed(0)  # reproducible initial weights
rng = np.random.default_rng(0)
""",
    ),
    (
        "md",
        """
## Data

A regression problem with a known answer: four input features, one target
made by a small fixed nonlinear function, plus a little noise. The data is
split into training, validation and test sets.
""",
    ),
    (
        "code",
        """
def make_data(n):
    x = rng.normal(size=(n, 4)).astype("float32")
    y = np.tanh(x @ np.array([[1.0], [-2.0], [0.5], [0.0]], "float32")) + 0.5 * x[:, :1]
    return x, (y + 0.05 * rng.normal(size=y.shape)).astype("float32")


x_train, y_train = make_data(2048)
x_val, y_val = make_data(256)
x_test, y_test = make_data(256)
print("train:", x_train.shape, y_train.shape, " validation:", x_val.shape, " test:", x_test.shape)
print("predicting the mean gives a test MSE of", float(np.mean((y_test - y_train.mean()) ** 2)))
""",
    ),
    (
        "md",
        """
## The model

A small multilayer perceptron. `jmod.Input` gives the input shape up
front, so the layers are built at once and `summary()` can show them.
""",
    ),
    (
        "code",
        """
model = jmod.Sequential(
    [
        jmod.Input(shape=[4]),
        jmod.layers.Dense(32, activation="relu"),
        jmod.layers.Dense(32, activation="relu"),
        jmod.layers.Dense(1),
    ],
    name="regressor",
)
model.summary()
""",
    ),
    (
        "md",
        """
## Compile

The optimizer is a name (`"adam"`, `"sgd"`, ... with Keras' defaults) or any
[optax](https://optax.readthedocs.io) transformation (`optax.adam(1e-2)`);
the loss a name, a `jmod.losses` object or any function
`(y_true, y_pred) -> loss`; the metrics are reported next to the loss.

A named optimizer keeps its learning rate in its state (variables, like the
moments), so callbacks can change it without recompiling, and `save` can
store it. Here it starts at 0.01 instead of Keras' 0.001.
""",
    ),
    (
        "code",
        """
model.compile(optimizer="adam", loss="mse", metrics=["mae"])
jmod.training.set_learning_rate(model.optimizer, 1e-2)
print(f"learning rate: {jmod.training.get_learning_rate(model.optimizer):g}")
""",
    ),
    (
        "md",
        """
## A callback

Callbacks run code at the start and end of training, of each epoch and of each
batch. This one keeps the validation loss of every epoch and reports when it
improves. `jmod.training.callbacks` also has `EarlyStopping`,
`ModelCheckpoint`, `LearningRateScheduler`, `TensorBoard` and more.
""",
    ),
    (
        "code",
        """
class BestEpoch(jmod.training.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.val_losses = []
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        self.val_losses.append(logs["val_loss"])
        if self.best is None or logs["val_loss"] < self.best[1]:
            self.best = (epoch, logs["val_loss"])


best_epoch = BestEpoch()
early_stopping = jmod.training.callbacks.EarlyStopping(monitor="val_loss", patience=5)
""",
    ),
    (
        "md",
        """
## Fit

`verbose=2` prints one line per epoch (`verbose=1` shows a progress bar).
`fit` returns a `History`: its `.history` maps each loss and metric to its
per-epoch values.
""",
    ),
    (
        "code",
        """
history = model.fit(
    x_train,
    y_train,
    batch_size=64,
    epochs=15,
    validation_data=(x_val, y_val),
    callbacks=[best_epoch, early_stopping],
    verbose=2,
)
""",
    ),
    (
        "code",
        """
print("recorded:", sorted(history.history))
losses = history.history["loss"]
print(f"loss: first epoch {losses[0]:.4f}, last {losses[-1]:.4f}")
epoch, val_loss = best_epoch.best
print(f"best validation epoch (from the callback): {epoch}, val_loss {val_loss:.4f}")
print("the callback saw", len(best_epoch.val_losses), "epochs")
""",
    ),
    (
        "md",
        """
Every step ran the same compiled computation: the train step was traced once
(the last, shorter batch of each epoch is padded and masked rather than traced
again).
""",
    ),
    (
        "code",
        """
print("train step traces:", model.train_function.trace_count)
""",
    ),
    (
        "md",
        """
## Evaluate

`evaluate` returns the loss and the metrics on data the model has not seen
(`return_dict=True` names them).
""",
    ),
    (
        "code",
        """
results = model.evaluate(x_test, y_test, batch_size=128, return_dict=True, verbose=0)
results
""",
    ),
    (
        "md",
        """
## Predict

`predict` runs the model on batches of inputs and returns a NumPy array. The
mean squared error of its predictions, computed here with NumPy, is the loss
`evaluate` reported.
""",
    ),
    (
        "code",
        """
predictions = model.predict(x_test, batch_size=128, verbose=0)
print("predictions:", predictions.shape, type(predictions).__name__)
print(np.round(np.hstack([predictions[:5], y_test[:5]]), 3))
mse = float(np.mean((predictions - y_test) ** 2))
print(f"NumPy MSE of the predictions: {mse:.5f}; evaluate said {results['loss']:.5f}")
print("same:", bool(np.isclose(mse, results["loss"], rtol=1e-4)))
""",
    ),
    (
        "md",
        """
## The trained model

In the notebook the model shows its summary table and a foldable tree of its
variables, with a summary of the trained values:
""",
    ),
    (
        "code",
        """
model
""",
    ),
    (
        "md",
        """
## A small CNN with pooling

The same `compile`/`fit` trains any stack of layers. Here: images whose
class is which half (top or bottom) is brighter, learned by convolutions
and max pooling. Every layer differentiates under `jmod.jit`, pooling too.
""",
    ),
    (
        "code",
        """
images = rng.normal(size=(256, 12, 12, 1)).astype("float32")
brighter = (images[:, :6].mean(axis=(1, 2, 3)) > images[:, 6:].mean(axis=(1, 2, 3)))
images[:, :6] += np.where(brighter, 0.5, 0.0)[:, None, None, None]
labels = brighter.astype("int32")

cnn = jmod.Sequential([
    jmod.layers.Conv2D(8, 3, padding="same", activation="relu"),
    jmod.layers.MaxPooling2D(),
    jmod.layers.AveragePooling2D(),
    jmod.layers.Flatten(),
    jmod.layers.Dense(2),
])
cnn.compile(
    optimizer="adam",
    loss=jmod.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
history = cnn.fit(images, labels, batch_size=32, epochs=8, verbose=0)
print(f"CNN accuracy: {history.history['accuracy'][0]:.2f} -> {history.history['accuracy'][-1]:.2f}")
""",
    ),
    (
        "md",
        """
## An LSTM text classifier on padded sequences

Token ids, 0 for padding: `Embedding(mask_zero=True)` makes a mask that
`Sequential` hands to the `LSTM`, which skips the padded steps (they keep
its state), as in Keras. The task: is the first token's id above the middle
of the vocabulary?
""",
    ),
    (
        "code",
        """
lengths = rng.integers(3, 10, size=512)
tokens = rng.integers(1, 30, size=(512, 10))
tokens[np.arange(10)[None, :] >= lengths[:, None]] = 0  # pad after each sequence's end
text_labels = (tokens[:, 0] > 15).astype("int32")

classifier = jmod.Sequential([
    jmod.layers.Embedding(30, 8, mask_zero=True),
    jmod.layers.LSTM(16),
    jmod.layers.Dense(2),
])
classifier.compile(
    optimizer="adam",
    loss=jmod.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
history = classifier.fit(tokens, text_labels, batch_size=32, epochs=8, verbose=0)
print(f"LSTM accuracy: {history.history['accuracy'][0]:.2f} -> {history.history['accuracy'][-1]:.2f}")
""",
    ),
    (
        "md",
        """
## Saving and loading the trained model

`save` writes the config, the compile arguments, the weights and the optimizer
state into one archive; `load_model` gives back a compiled model that predicts
the same and can go on training where it stopped. (An optax object passed to
`compile` cannot be stored: such a model loads uncompiled, with a warning
at `save`.)
""",
    ),
    (
        "code",
        """
model.save("regressor.jmod")
restored = jmod.models.load_model("regressor.jmod")
same = np.allclose(restored.predict(x_test, verbose=0), predictions, atol=1e-6)
print("restored model predicts the same:", bool(same))
print(f"compiled again, learning rate: {jmod.training.get_learning_rate(restored.optimizer):g}")
more = restored.fit(x_train, y_train, batch_size=64, epochs=1, verbose=0)
print(f"one more epoch from where it stopped: loss {more.history['loss'][0]:.4f}")
""",
    ),
    (
        "md",
        """
For long runs, checkpoint the model and its optimizer together (the optimizer
state is variables too) and keep the last few with a `CheckpointManager`:
""",
    ),
    (
        "code",
        """
ckpt = jmod.Checkpoint(model=model, optimizer=model.optimizer)
manager = jmod.CheckpointManager(ckpt, "checkpoints", max_to_keep=2)
print(manager.save())
""",
    ),
]
