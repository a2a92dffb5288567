"""The restore plan (jmod/checkpoint/_restore_plan.py): index + variables -> what to assign.

No file is read or written here: entries and variables are stand-ins with a
shape and a dtype, as the plan only looks at those.
"""

from types import SimpleNamespace

import numpy as np
import pytest

import jmod
from jmod.checkpoint import _format
from jmod.checkpoint._restore_plan import SAVE_COUNTER, plan_restore, root_of
from jmod.errors import CheckpointError


def entry(shape=(2,), dtype="float32"):
    return SimpleNamespace(shape=shape, dtype=dtype)


def var(shape=(2,), dtype=np.float32):
    return SimpleNamespace(shape=shape, dtype=np.dtype(dtype))


def test_existing_variables_are_assigned_in_key_order_and_the_rest_is_unmatched():
    entries = {"m/b": entry(), "m/a": entry(), "old/x": entry()}
    plan = plan_restore(entries, {"m/a": var(), "m/b": var()})
    assert plan.assign == ("m/a", "m/b")
    assert plan.unmatched == {"old/x"}
    assert plan.deferred == {} and plan.missing == () and not plan.counter
    assert plan.wanted == ["m/a", "m/b"]


def test_keys_under_a_module_without_the_variable_yet_wait_for_its_longest_root():
    entries = {"model/dense/w": entry(), "model/head/b": entry(), "elsewhere/v": entry()}
    plan = plan_restore(entries, {}, roots=["model", "model/dense"])
    assert plan.deferred == {"model/dense/w": "model/dense", "model/head/b": "model"}
    assert plan.unmatched == {"elsewhere/v"}
    assert plan.assign == ()


def test_a_root_matches_whole_path_components_only():
    # "model2/w" is not under "model": prefixes end at a slash.
    assert root_of("model2/w", ["model"]) is None
    assert root_of("model/w", ["model"]) == "model"
    plan = plan_restore({"model2/w": entry()}, {}, roots=["model"])
    assert plan.deferred == {} and plan.unmatched == {"model2/w"}


def test_an_existing_variable_without_a_value_is_an_error_naming_it():
    with pytest.raises(CheckpointError, match=r"ck\.index has no value for 1 .*: m/b; pass"):
        plan_restore({"m/a": entry()}, {"m/a": var(), "m/b": var()}, filename="ck.index")


def test_partial_restores_the_rest_and_lists_the_missing():
    plan = plan_restore({"m/a": entry()}, {"m/a": var(), "m/b": var(), "m/c": var()}, partial=True)
    assert plan.assign == ("m/a",)
    assert plan.missing == ("m/b", "m/c")


def test_a_long_missing_list_is_shortened_in_the_message():
    variables = {f"v{i:02d}": var() for i in range(12)}
    with pytest.raises(CheckpointError, match=r"12 existing variable\(s\): v00, .*, v09, \.\.\.;"):
        plan_restore({}, variables)


def test_a_shape_mismatch_names_key_both_shapes_and_the_file():
    with pytest.raises(
        CheckpointError,
        match=r"m/w: checkpoint has shape \(3, 4\) float32, the variable is \(3, 3\) float32 "
        r"\(file ck\.index\)",
    ):
        plan_restore({"m/w": entry((3, 4))}, {"m/w": var((3, 3))}, filename="ck.index")


def test_a_dtype_mismatch_is_an_error_too():
    with pytest.raises(CheckpointError, match=r"m/w: checkpoint has shape \(2,\) int32, .*float32"):
        plan_restore({"m/w": entry(dtype="int32")}, {"m/w": var()})


def test_deferred_values_are_not_checked_until_their_variable_exists():
    # A deferred key has no variable to compare with yet: any shape plans fine.
    plan = plan_restore({"m/w": entry((7, 7))}, {}, roots=["m"])
    assert plan.deferred == {"m/w": "m"}


def test_save_counter_is_read_but_never_assigned_missing_or_unmatched():
    entries = {SAVE_COUNTER: entry((), "int64"), "m/a": entry()}
    # The checkpoint object's own counter is among its variables; it is not "missing".
    plan = plan_restore(entries, {"m/a": var(), SAVE_COUNTER: var((), np.int64)})
    assert plan.counter
    assert plan.assign == ("m/a",) and plan.unmatched == frozenset() and plan.missing == ()
    assert plan.wanted == ["m/a", SAVE_COUNTER]
    plan = plan_restore({"m/a": entry()}, {"m/a": var(), SAVE_COUNTER: var((), np.int64)})
    assert not plan.counter and plan.missing == ()


def test_a_save_counter_that_is_not_a_scalar_is_refused():
    with pytest.raises(CheckpointError, match=r"ck\.index: save_counter has shape \(2,\)"):
        plan_restore({SAVE_COUNTER: entry((2,), "int64")}, {}, filename="ck.index")


def test_missing_variables_are_reported_before_mismatched_ones():
    # Both problems: the one that needs `partial=True` comes first, as before any read.
    with pytest.raises(CheckpointError, match="has no value for"):
        plan_restore({"a": entry((9,))}, {"a": var(), "b": var()})


def test_the_plan_takes_real_index_entries_and_variables():
    index_entry = _format.Entry("m/w", "float32", (2, 2), 0, 64, 16, (0,))
    plan = plan_restore({"m/w": index_entry}, {"m/w": jmod.Variable(np.zeros((2, 2), np.float32))})
    assert plan.assign == ("m/w",)
    with pytest.raises(CheckpointError, match=r"\(2, 2\) float32, the variable is \(2,\) float32"):
        plan_restore({"m/w": index_entry}, {"m/w": jmod.Variable(np.zeros(2, np.float32))})
