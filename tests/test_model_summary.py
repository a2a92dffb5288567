"""`model.summary()`: Keras 2's table text (with Keras 3's byte units) and its HTML twin."""

import pytest

import jmod
import jmod.models
from jmod import layers
from jmod.models import Input, Model, Sequential
from jmod.models.summary import format_html, format_table, readable_size
from tests.guide_layers import FlexibleDense, functional_model

# The guide's table as Keras 2 prints it (tensorflow-semantics.md), with the
# byte unit Keras 3 and DESIGN.md use ("B" for "Byte") and trailing spaces cut.
GUIDE_TABLE = """\
Model: "model"
_________________________________________________________________
 Layer (type)                Output Shape              Param #
=================================================================
 input_1 (InputLayer)        [(None, 3)]               0

 flexible_dense_3 (Flexible  (None, 3)                 12
 Dense)

 flexible_dense_4 (Flexible  (None, 2)                 8
 Dense)

=================================================================
Total params: 20 (80.00 B)
Trainable params: 20 (80.00 B)
Non-trainable params: 0 (0.00 B)
_________________________________________________________________"""

# conv 3*3*1*8+8 = 80, dense 1352*10+10 = 13530; 13610 float32 = 54440 B = 53.16 KB.
CNN_TABLE = """\
Model: "sequential"
_________________________________________________________________
 Layer (type)                Output Shape              Param #
=================================================================
 conv2d (Conv2D)             (None, 26, 26, 8)         80

 max_pooling2d (MaxPooling2  (None, 13, 13, 8)         0
 D)

 flatten (Flatten)           (None, 1352)              0

 dense (Dense)               (None, 10)                13,530

=================================================================
Total params: 13,610 (53.16 KB)
Trainable params: 13,610 (53.16 KB)
Non-trainable params: 0 (0.00 B)
_________________________________________________________________"""


def _summary(model, **kwargs):
    lines = []
    model.summary(print_fn=lines.append, **kwargs)
    return "\n".join(lines)


def test_guide_functional_model_table():
    layers.reset_names()
    for _ in range(3):  # the guide made three FlexibleDense before this model
        FlexibleDense(1)
    assert _summary(functional_model()) == GUIDE_TABLE


def test_small_cnn_table():
    layers.reset_names()
    model = Sequential(
        [
            Input(shape=(28, 28, 1)),
            layers.Conv2D(8, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(10),
        ]
    )
    assert _summary(model) == CNN_TABLE


def test_summary_prints_to_stdout_by_default(capsys):
    layers.reset_names()
    for _ in range(3):
        FlexibleDense(1)
    functional_model().summary()
    assert capsys.readouterr().out == GUIDE_TABLE + "\n"


def test_non_trainable_counts_and_bytes():
    model = Sequential([Input(shape=[4]), layers.BatchNormalization()])
    text = _summary(model)
    assert "Total params: 16 (64.00 B)" in text
    assert "Trainable params: 8 (32.00 B)" in text
    assert "Non-trainable params: 8 (32.00 B)" in text


def test_graph_with_shared_layer_gets_connected_to_column():
    layers.reset_names()
    a, b = Input(shape=[3], name="a"), Input(shape=[3], name="b")
    shared = layers.Dense(2, name="shared")
    merged = layers.Concatenate(name="cat")([shared(a), shared(b)])
    text = _summary(Model([a, b], merged, name="siamese"))
    header = " Layer (type)                   Output Shape         Param #     Connected to"
    expected_rows = [
        " a (InputLayer)                 [(None, 3)]          0           []",
        " b (InputLayer)                 [(None, 3)]          0           []",
        " shared (Dense)                 (None, 2)            8           ['a[0][0]',",
        "                                                                  'b[0][0]']",
        " cat (Concatenate)              (None, 4)            0           ['shared[0][0]',",
        "                                                                  'shared[1][0]']",
    ]
    lines = text.split("\n")
    assert lines[0] == 'Model: "siamese"' and lines[1] == "_" * 98
    assert lines[2] == header and lines[3] == "=" * 98
    assert [line for line in lines[4:] if line.startswith(" ")] == expected_rows


def test_layer_called_with_different_shapes_shows_multiple():
    a, b = Input(shape=[3]), Input(shape=[5, 3])
    shared = layers.Dense(2)
    text = _summary(Model([a, b], [shared(a), shared(b)]))
    assert any(
        line.startswith(f" {shared.name} (Dense)") and "multiple" in line
        for line in text.split("\n")
    )


def test_unbuilt_model_says_how_to_build():
    with pytest.raises(jmod.ModuleError, match="not yet been built.*build()"):
        Sequential([layers.Dense(2)]).summary()


def test_line_length_and_positions_are_honoured():
    model = Sequential([Input(shape=[3]), layers.Dense(2, name="d")])
    text = _summary(model, line_length=40, positions=[0.5, 0.8, 1.0])
    assert text.split("\n")[1] == "_" * 40
    assert " d (Dense)          (None, 2)   8" in text.split("\n")


def test_readable_size_units():
    assert readable_size(0) == "0.00 B"
    assert readable_size(1023) == "1023.00 B"
    assert readable_size(1024) == "1.00 KB"
    assert readable_size(5 * 1024**3) == "5.00 GB"


def test_format_table_is_a_pure_function_of_rows():
    text = format_table("m", [("x (T)", "(None, 1)", 3, None)], (3, 12, 0, 0))
    assert " x (T)                       (None, 1)                 3" in text.split("\n")


def test_html_table_escapes_and_has_totals():
    html = format_html("m<1>", [("d (Dense)", "(None, 2)", 8, ["a[0][0]"])], (8, 32, 0, 0), True)
    assert "m&lt;1&gt;" in html and '<td style="padding: 2px 12px">d (Dense)</td>' in html
    assert "Connected to" in html and "a[0][0]" in html
    assert "Total params: 8 (32.00 B)" in html


def test_model_html_in_notebooks_shows_the_table():
    model = functional_model()
    html = model._repr_html_()
    if html is None:
        pytest.skip("treescope not installed")
    assert "Total params: 20 (80.00 B)" in html


def test_seeded_dropout_key_is_not_counted_as_a_parameter():
    model = jmod.Sequential(
        [jmod.Input(shape=(3,)), jmod.layers.Dense(2), jmod.layers.Dropout(0.5, seed=1)]
    )
    assert model.count_params() == 8
    lines = []
    model.summary(print_fn=lines.append)
    assert "Total params: 8 (32.00 B)" in "\n".join(lines)
