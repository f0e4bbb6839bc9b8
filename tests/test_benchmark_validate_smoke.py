"""The validation benchmark still runs and its shapes mean what they say (untimed)."""

import pytest

from benchmarks import validate as bench


@pytest.mark.parametrize(("name", "problems"), [("valid", 0), ("broken", 10),
                                                 ("unknown-names", 9)])
def test_each_shape_compiles_to_its_number_of_problems(name: str, problems: int) -> None:
    row = bench.measure(name, bench.SHAPES[name](10), repeat=1)
    assert (row.steps, row.problems) == (10, problems)
    assert row.first_s > 0 and row.median_s > 0
