"""The event engine, the cost functions' rooflines, and the reports built from events."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.geometry import Rect
from core.target import load_target
from simulator import cost
from simulator.cost import Cost, CostModel, load_calibration
from simulator.engine import GraphBuilder, LinkSpan, Task, roofline_violations, simulate
from simulator.trace import breakdown, chrome_trace, critical_path, link_busy_cycles

CAL = load_calibration()
CM = CostModel(load_target("mesh-16x16"), CAL)
TAU = CAL.task_start_cycles


def _cost(cycles: int, busy: int = 0) -> Cost:
    return Cost("test", cycles, 0.0, link_busy_cycles=busy)


def test_two_tasks_on_two_regions_run_in_sequence_or_side_by_side():
    a, b = Rect(0, 0, 4, 4), Rect(4, 0, 4, 4)
    chained = GraphBuilder()
    first = chained.add("a", "compute", _cost(10), region=a)
    chained.add("b", "compute", _cost(7), [first], region=b)
    assert simulate(chained.tasks).makespan_cycles == 10 + 7

    apart = GraphBuilder()
    apart.add("a", "compute", _cost(10), region=a)
    apart.add("b", "compute", _cost(7), region=b)
    assert simulate(apart.tasks).makespan_cycles == max(10, 7)


def test_pipeline_over_two_regions_overlaps_tokens():
    """Tokens flow region A -> link -> region B; A is the bottleneck: n*A + T + B."""
    a, b = Rect(0, 0, 2, 2), Rect(2, 0, 2, 2)
    link = (LinkSpan("E", Rect(1, 0, 1, 2)),)
    g = GraphBuilder()
    prev_b = None
    tokens, ca, ct, busy, cb = 4, 10, 5, 3, 7
    for i in range(tokens):
        produced = g.add(f"a{i}", "compute", _cost(ca), region=a, layer="A")
        moved = g.add(f"t{i}", "fabric", _cost(ct, busy), [produced], links=link)
        prev_b = g.add(f"b{i}", "compute", _cost(cb), [moved, prev_b], region=b, layer="B")
    timeline = simulate(g.tasks)
    assert timeline.makespan_cycles == tokens * ca + ct + cb
    starts = {e.name: e.start_cycles for e in timeline.events}
    assert starts["b0"] < starts["a3"]  # layer B works while layer A is still busy


def test_transfers_on_a_shared_link_share_its_bandwidth():
    """Two equal transfers on the same links start together on two colours and both end after
    2 w wavelet-cycles (round robin); on other links they do not meet."""
    nbytes, hops = 400, 3
    t = cost.transfer(CM, nbytes, hops)
    wavelets = math.ceil(nbytes / 4)
    assert t.cycles == TAU + 2 * CM.target.ramp_latency_cycles + hops + wavelets
    assert t.link_busy_cycles == wavelets
    row = LinkSpan("E", Rect(0, 0, 3, 1))
    cases = {
        "same links": (row, row),
        "one shared link": (row, LinkSpan("E", Rect(2, 0, 3, 1))),
        "other direction": (row, LinkSpan("W", Rect(0, 0, 3, 1))),
        "other row": (row, LinkSpan("E", Rect(0, 1, 3, 1))),
    }
    for case, (first, second) in cases.items():
        g = GraphBuilder()
        g.add("first", "fabric", t, links=[first])
        g.add("second", "fabric", t, links=[second])
        events = simulate(g.tasks).events
        shared = first.overlaps(second)
        assert [e.start_cycles for e in events] == [0, 0], case
        ends = [t.cycles + (wavelets if shared else 0)] * 2
        assert [e.end_cycles for e in events] == ends, case


def test_a_one_wavelet_message_interleaves_with_a_long_transfer():
    """Issue 14: a one-wavelet message used to wait 16,384 cycles behind a transfer on the same
    link; on its own colour it takes 2 cycles of link time and delays the long one by 1."""
    long, short = cost.transfer(CM, 4 * 16_384, 4), cost.transfer(CM, 4, 4)
    assert (long.link_busy_cycles, short.link_busy_cycles) == (16_384, 1)
    row = LinkSpan("E", Rect(0, 0, 5, 1))
    g = GraphBuilder()
    g.add("long", "fabric", long, links=[row])
    g.add("short", "fabric", short, links=[row])
    first, second = simulate(g.tasks).events
    assert (second.start_cycles, second.duration_cycles) == (0, short.cycles + 1)
    assert first.end_cycles == long.cycles + 1
    # one colour only: the old behaviour, the message waits for the whole transfer
    first, second = simulate(g.tasks, colors=1).events
    assert second.start_cycles == 16_384 and first.end_cycles == long.cycles


def test_a_newcomer_pays_for_the_wavelets_it_meets_on_its_busiest_link():
    """Three transfers of 100, 100 and 60 wavelets on one link: the third takes 60 + 60 + 60
    cycles of link time, each of the first two is delayed by 60 (processor sharing)."""
    busy = [100, 100, 60]
    row = LinkSpan("E", Rect(0, 0, 2, 1))
    g = GraphBuilder()
    for i, w in enumerate(busy):
        g.add(f"t{i}", "fabric", _cost(w + 10, w), links=[row])
    ends = [e.end_cycles for e in simulate(g.tasks).events]
    # t1 meets t0 (100 each: +100 both); t2 meets both (left 100 each: +60 each, itself +120)
    assert ends == [110 + 100 + 60, 110 + 100 + 60, 70 + 120]
    assert max(ends) - 10 == sum(busy)  # the link is never idle and never over-used


def test_overlapping_regions_and_external_memory_serialize():
    g = GraphBuilder()
    g.add("a", "compute", _cost(10), region=Rect(0, 0, 4, 4))
    g.add("b", "compute", _cost(10), region=Rect(3, 3, 2, 2))
    assert simulate(g.tasks).makespan_cycles == 20

    s = cost.stream(CM, 1_000_000)
    bytes_per_cycle = CM.target.external_memory_bytes_per_second / CM.target.clock_hz
    assert s.cycles == TAU + math.ceil(1_000_000 / bytes_per_cycle)
    g = GraphBuilder()
    g.add("w0", "stream", s)
    g.add("w1", "stream", s)
    assert simulate(g.tasks).makespan_cycles == 2 * s.cycles


def test_graph_builder_and_task_validation():
    g = GraphBuilder()
    with pytest.raises(ValueError, match="earlier task ids"):
        g.add("x", "compute", _cost(1), [0], region=Rect(0, 0, 1, 1))
    with pytest.raises(ValueError, match="needs a region"):
        Task("x", "compute", _cost(1))
    with pytest.raises(ValueError, match="kind"):
        Task("x", "dma", _cost(1))
    with pytest.raises(ValueError, match="not an earlier task"):
        simulate([Task("x", "fabric", _cost(1), deps=(0,))])


def _random_graph(seed: int) -> GraphBuilder:
    rng = __import__("random").Random(seed)
    g = GraphBuilder()
    for i in range(40):
        deps = rng.sample(range(i), k=min(i, rng.randint(0, 2)))
        x, y = rng.randrange(8), rng.randrange(8)
        if rng.random() < 0.5:
            c = cost.matmul(CM, 1, rng.randint(1, 512), rng.randint(1, 512), parts_k=8, parts_n=8)
            g.add(f"c{i}", "compute", c, deps, Rect(x, y, 8, 8), op=f"op{i}")
        else:
            span = LinkSpan(rng.choice("ENWS"), Rect(x, y, rng.randint(1, 8), 1))
            g.add(f"t{i}", "fabric", cost.transfer(CM, rng.randint(1, 999), 3), deps, links=[span])
    return g


def test_same_graph_gives_identical_events():
    first, second = simulate(_random_graph(1).tasks), simulate(_random_graph(1).tasks)
    assert first == second
    assert first.events and not roofline_violations(first.events)


sizes = st.integers(1, 1 << 14)
parts = st.integers(1, 256)


@settings(max_examples=60, deadline=None)
@given(
    target=st.sampled_from(["wse2", "wse3", "mesh-4x4"]),
    dtype=st.sampled_from(["fp16", "bf16", "fp32"]),
    m=st.integers(1, 64),
    k=sizes,
    n=sizes,
    pk=parts,
    pn=parts,
    nbytes=st.integers(1, 1 << 16),
    hops=st.integers(0, 1000),
    steps=st.integers(1, 100),
)
def test_no_cost_beats_its_roofline(target, dtype, m, k, n, pk, pn, nbytes, hops, steps):
    cm = CostModel(load_target(target), CAL, dtype)
    costs = [
        cost.matmul(cm, m, k, n, parts_k=pk, parts_n=pn),
        cost.elementwise(cm, k, parts=pk, inputs=2, ops_per_element=3),
        cost.reduction(cm, n, parts=pn),
        cost.softmax(cm, m, n, parts_cols=pn),
        cost.norm(cm, m, k, parts_cols=pk),
        cost.attention(cm, m, 1, n, 128, parts_kv=pn, parts_dim=pk % 8 + 1),
        cost.scan(cm, m, k, 16, parts=pk),
        cost.transfer(cm, nbytes, hops, steps=steps),
        cost.chain_reduce(cm, nbytes, steps, hops + steps),
        cost.stream(cm, nbytes),
    ]
    for c in costs:
        assert c.cycles >= c.roofline_cycles, c
    g = GraphBuilder()
    prev = None
    for i, c in enumerate(costs):
        kind = {"data_movement": "fabric", "collective": "fabric", "stream": "stream"}.get(
            c.op_class, "compute"
        )
        links = [LinkSpan("E", Rect(0, 0, 4, 1))] if kind == "fabric" else []
        region = Rect(0, 0, 4, 4) if kind == "compute" else None
        prev = g.add(f"t{i}", kind, c, [prev], region, links)
    assert roofline_violations(simulate(g.tasks).events) == []


def test_reports_come_from_events():
    g = GraphBuilder()
    bcast = LinkSpan("E", Rect(0, 0, 3, 4))
    t = g.add("x", "fabric", cost.transfer(CM, 64, 3), links=[bcast], op="gemv", node="mm_1")
    c = g.add("mac", "compute", _cost(1100), [t], Rect(0, 0, 4, 4), location="model.py:12")
    timeline = simulate(g.tasks)

    busy = link_busy_cycles(timeline.events, 4, 4)
    assert (busy["E"][:, :3] == 16).all() and busy["E"][:, 3].sum() == 0
    assert sum(a.sum() for d, a in busy.items() if d != "E") == 0

    path = critical_path(timeline.events)
    assert [e.task_id for e in path] == [t, c]
    split = breakdown(timeline.events)
    assert split.compute_cycles + split.comm_cycles + split.wait_cycles == timeline.makespan_cycles

    trace = chrome_trace(timeline.events, CM.target.clock_hz)
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(spans) == 2
    mac = next(e for e in spans if e["name"] == "mac")
    assert mac["dur"] == pytest.approx(1.0)  # 1100 cycles at 1.1 GHz
    assert mac["args"]["location"] == "model.py:12"
    assert next(e for e in spans if e["name"] == "x")["args"]["node"] == "mm_1"
