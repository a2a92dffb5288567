"""Default names from class names: TensorFlow's rule for modules, Keras' for layers and losses.

The two rules differ where a digit meets a capital: `tf.Module` names
`Conv2D` `conv2_d`, Keras names it `conv2d`. Each kind of object keeps the
name its own library gives it.

Example:
    >>> from jmod._naming import keras_snake_case, tf_snake_case
    >>> tf_snake_case("Conv2D"), keras_snake_case("Conv2D")
    ('conv2_d', 'conv2d')
"""

import re

# tensorflow/python/module/module.py, `camel_to_snake`.
_TF_CAPITAL = re.compile(r"((?<=[a-z0-9])[A-Z]|(?!^)[A-Z](?=[a-z]))")


def tf_snake_case(name: str) -> str:
    """`tf.Module`'s default name for class `name`: an underscore before each capital word.

    Example:
        >>> tf_snake_case("MySequentialModule"), tf_snake_case("Conv2D")
        ('my_sequential_module', 'conv2_d')
    """
    return _TF_CAPITAL.sub(r"_\1", name).lower()


def keras_snake_case(name: str) -> str:
    """Keras' default name for class `name` (`keras.src.utils.naming.to_snake_case`).

    Digits stay with the word before them: `Conv2D` is `conv2d`,
    `MaxPooling2D` `max_pooling2d`, `ConvLSTM2D` `conv_lstm2d`.

    Example:
        >>> keras_snake_case("MaxPooling2D"), keras_snake_case("MeanSquaredError")
        ('max_pooling2d', 'mean_squared_error')
    """
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()
