"""`jmod.saving`: the registry, `serialize` / `deserialize`, and what they refuse."""

import json
import sys

import numpy as np
import pytest

import jmod
import jmod.losses
import jmod.metrics
import jmod.models
import jmod.saving
from jmod.layers import Dense
from jmod.saving import (
    custom_object_scope,
    deserialize,
    get_registered_name,
    get_registered_object,
    register_serializable,
    serialize,
    unknown_classes,
)
from tests.guide_layers import FlexibleDense


def test_guide_classes_are_registered_under_custom():
    assert get_registered_name(FlexibleDense) == "Custom>FlexibleDense"
    assert get_registered_object("Custom>FlexibleDense") is FlexibleDense
    assert get_registered_object("Custom>Nothing") is None


def test_package_and_name_make_the_registered_name():
    @register_serializable(package="Test", name="Renamed")
    class Original(jmod.layers.Layer):
        pass

    assert get_registered_name(Original) == "Test>Renamed"
    assert get_registered_name(Original(name="o")) == "Test>Renamed"


def test_redefining_the_same_class_is_allowed_another_class_is_not():
    def define():
        @register_serializable(package="Redefine")
        class Block(jmod.layers.Layer):
            pass

        return Block

    first, second = define(), define()
    assert get_registered_object("Redefine>Block") is second and first is not second

    with pytest.raises(jmod.SerializationError, match="already registered"):

        @register_serializable(package="Redefine", name="Block")
        class Other(jmod.layers.Layer):
            pass


def test_package_may_not_contain_separator():
    with pytest.raises(jmod.SerializationError, match="without '>'"):
        register_serializable(package="a>b")


def test_builtin_serializes_without_registered_name():
    layer = Dense(3, activation="relu", name="d")
    config = serialize(layer)
    assert config["class_name"] == "Dense" and config["registered_name"] is None
    assert config["config"] == layer.get_config()
    json.dumps(config)  # JSON-ready
    clone = deserialize(config)
    assert type(clone) is Dense and clone.get_config() == layer.get_config()


def test_plain_argument_layer_needs_no_get_config():
    @register_serializable(package="Test")
    class Scale(jmod.layers.Layer):
        def __init__(self, factor, offsets=(0.0,), **kwargs):
            super().__init__(**kwargs)
            self.factor, self.offsets = factor, offsets

        def call(self, x):
            return x * self.factor + self.offsets[0]

    clone = deserialize(json.loads(json.dumps(serialize(Scale(2.5, offsets=[1.0], name="s")))))
    assert (clone.factor, list(clone.offsets), clone.name) == (2.5, [1.0], "s")
    np.testing.assert_allclose(clone(np.ones((1, 2), np.float32)), [[3.5, 3.5]])


def test_non_plain_constructor_argument_is_a_clear_error():
    class Holder(jmod.layers.Layer):
        def __init__(self, fn, **kwargs):
            super().__init__(**kwargs)
            self.fn = fn

    with pytest.raises(jmod.SerializationError, match="fn=function"):
        serialize(Holder(lambda x: x, name="h"))


def test_get_config_with_arrays_is_refused_with_its_path():
    class ArrayConfig(jmod.layers.Layer):
        def get_config(self):
            return {**super().get_config(), "table": np.zeros(3)}

    with pytest.raises(jmod.SerializationError, match=r"a\.config\.table: ndarray"):
        serialize(ArrayConfig(name="a"))


def test_unregistered_class_needs_custom_objects():
    class Local(jmod.layers.Layer):
        def call(self, x):
            return x

    config = serialize(Local(name="l"))
    assert config["registered_name"] == "Local"
    with pytest.raises(jmod.SerializationError, match="unknown class.*'Local'"):
        deserialize(config)
    assert type(deserialize(config, custom_objects={"Local": Local})) is Local
    with custom_object_scope({"Local": Local}):
        assert type(deserialize(config)) is Local


def test_registered_name_never_falls_back_to_a_builtin_of_the_same_class_name():
    config = {"class_name": "Dense", "config": {"units": 2}, "registered_name": "Other>Dense"}
    with pytest.raises(jmod.SerializationError, match="'Other>Dense'"):
        deserialize(config)


def test_module_paths_are_names_never_imports():
    config = {
        "class_name": "jmod_evil_module.Payload",
        "config": {},
        "registered_name": "jmod_evil_module.Payload",
    }
    with pytest.raises(jmod.SerializationError, match="nothing is imported"):
        deserialize(config)
    assert "jmod_evil_module" not in sys.modules
    with pytest.raises(jmod.SerializationError, match="unknown class"):
        deserialize({"class_name": "system", "config": {}, "registered_name": None})


def test_unknown_classes_lists_every_missing_name_in_a_model_config():
    x = jmod.models.Input(shape=[3])
    model = jmod.models.Model(x, FlexibleDense(2)(Dense(3)(x)))
    config = json.loads(model.to_json())
    assert unknown_classes(config) == []
    config["config"]["layers"][1]["registered_name"] = "Gone>Dense"
    assert unknown_classes(config) == ["Gone>Dense"]
    config["config"]["layers"][2]["registered_name"] = "Gone>Flex"
    assert unknown_classes(config) == ["Gone>Dense", "Gone>Flex"]


def test_wrong_config_keys_are_a_serialization_error():
    config = {
        "class_name": "Dense",
        "config": {"units": 2, "colour": "red"},
        "registered_name": None,
    }
    with pytest.raises(jmod.SerializationError, match="Dense"):
        deserialize(config)
    with pytest.raises(jmod.SerializationError, match="class_name"):
        deserialize(["not", "a", "config"])


def test_model_from_json_round_trip():
    model = jmod.models.Sequential([jmod.models.Input(shape=[2]), Dense(1, name="out")])
    clone = jmod.models.model_from_json(model.to_json())
    assert [layer.name for layer in clone.layers] == ["out"] and clone.built


def test_builtins_sharing_a_class_name_stay_apart():
    metric = serialize(jmod.metrics.MeanSquaredError())
    loss = serialize(jmod.losses.MeanSquaredError())
    assert (metric["module"], loss["module"]) == ("jmod.metrics", "jmod.losses")
    assert type(deserialize(metric)) is jmod.metrics.MeanSquaredError
    assert type(deserialize(loss)) is jmod.losses.MeanSquaredError
    with pytest.raises(jmod.SerializationError, match="unknown class"):
        deserialize({**metric, "module": "os"})
