"""The typed user snippet (tests/typing/) runs; CI type-checks it with mypy (.ci/run)."""

from tests.typing.user_snippet import run


def test_the_typed_snippet_runs_and_trains():
    # x = ones(1, 3), w = ones(3, 2): x @ w = [[3, 3]], so the loss is 2 * 3**2 = 18.
    assert run() == 18.0
