"""The engine benchmark still runs: every shape at tiny scale, one model call per step (untimed)."""

from collections.abc import Callable

import pytest

from benchmarks import engine as bench


@pytest.mark.parametrize(("make", "steps"), [
    (bench.soundtrack, 9), (bench.wide, 502), (bench.deep, 200), (bench.diamond_skew, 13),
], ids=["soundtrack", "wide", "deep", "diamond-skew"])
def test_full_size_shapes_have_the_specified_number_of_steps(
        make: Callable[[], bench.Shape], steps: int) -> None:
    shape = make()
    assert len(shape.deps) == len(shape.latency_s) == steps


@pytest.mark.parametrize("shape", [
    bench.soundtrack(latency_s=0), bench.wide(width=5, latency_s=0),
    bench.deep(length=5, latency_s=0), bench.diamond_skew(x_s=0.002, y_s=0, ys=3),
], ids=lambda shape: shape.name)
async def test_each_shape_runs_once_per_step_through_engine_and_floor(
        shape: bench.Shape) -> None:
    run = await bench.run_engine(shape)
    assert run.succeeded
    assert run.calls == dict.fromkeys(shape.deps, 1)
    floor_generator = bench.SleepingGenerator(shape.latency_s)
    assert await bench.run_floor(shape, floor_generator) > 0
    assert floor_generator.calls == dict.fromkeys(shape.deps, 1)
    assert await bench.run_floor(shape) > 0


async def test_measure_and_render_report_calls_per_step() -> None:
    row = await bench.measure(bench.wide(width=3, latency_s=0), repeat=1)
    memory = await bench.measure_memory(width=20)
    assert row.exact and memory.exact and memory.steps == 22
    table = bench.render([row], memory, repeat=1)
    assert "5/5" in table and "!" not in table
    assert row.floor_s > 0 and row.bare_s > 0
