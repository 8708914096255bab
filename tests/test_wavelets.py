"""The engine's aggregated contention model against a wavelet-level simulation of 16x16 PEs."""

from __future__ import annotations

from dataclasses import replace

from core.geometry import Rect
from core.target import load_target
from simulator import cost, wavelets
from simulator.cost import CostModel, load_calibration
from simulator.engine import GraphBuilder, LinkSpan, simulate

CM = CostModel(load_target("mesh-16x16"), load_calibration())
RAMP, HOP = CM.target.ramp_latency_cycles, CM.target.hop_latency_cycles
# The stated bound (docs/fabric.md): |engine - wavelet-level| / wavelet-level makespan.
BOUND = {
    "shift": 0.0,
    "broadcast": 0.0,
    "all-to-all": 0.05,
    "all-to-all of a row, through 16x16": 0.05,
    "two crossing flows": 0.01,
    "one wavelet behind a long flow": 0.001,
}


def test_a_lone_flow_takes_the_closed_form():
    flow = wavelets.xy_flow((1, 2), (7, 9), 50)
    assert len(flow.path) == 6 + 7
    alone = replace(CM, calibration=replace(CM.calibration, task_start_cycles=0))
    assert wavelets.run([flow], RAMP, HOP) == [cost.transfer(alone, 50 * 4, 13).cycles]
    assert wavelets.run([flow], RAMP, HOP)[0] == 2 * RAMP + 13 * HOP + 50


def test_the_aggregated_model_is_within_its_bound_of_the_wavelet_level_one():
    """Measured (engine, wavelet-level) cycles: shift 69/69, broadcast 83/83, all-to-all
    1058/1089 (-2.8 %), all-to-all of a row spread over 16 rows of routers 109/109, two
    crossing flows 1110/1104 (+0.5 %), one wavelet behind a 16,384-wavelet flow 16404/16404."""
    measured = wavelets.compare(CM)
    assert measured == {
        "shift": (69, 69),
        "broadcast": (83, 83),
        "all-to-all": (1058, 1089),
        "all-to-all of a row, through 16x16": (109, 109),
        "two crossing flows": (1110, 1104),
        "one wavelet behind a long flow": (16404, 16404),
    }
    for name, (engine, level) in measured.items():
        assert abs(engine - level) <= BOUND[name] * level, name


def test_a_one_wavelet_message_gets_through_on_its_own_colour():
    """Sent 1,000 cycles into a 16,384-wavelet flow on the same row: wavelet by wavelet it
    takes its lone 11 cycles and delays the long flow by 1; the engine charges it 12 (its
    closed form plus one shared cycle, not the 15,384 left of the long flow) and the long
    flow 1."""
    alone = 2 * RAMP + 15 * HOP + 16_384
    flows, _ = wavelets.patterns(CM)["one wavelet behind a long flow"]
    assert wavelets.run(flows, RAMP, HOP) == [alone + 1, wavelets.LATE + 2 * RAMP + 6 * HOP + 1]
    cm = replace(CM, calibration=replace(CM.calibration, task_start_cycles=0))
    g = GraphBuilder()
    first = (16_384, 15, [LinkSpan("E", Rect(0, 0, 15, 1))])
    long, short = wavelets.two(g, cm, first, (1, 6, [LinkSpan("E", Rect(3, 0, 6, 1))]), 1000)
    events = simulate(g.tasks, CM.target.colors).events
    assert (events[long].end_cycles, events[short].end_cycles) == (alone + 1, 1000 + 12)
    assert events[short].duration_cycles == 12
    one_colour = simulate(g.tasks, 1).events  # the old model: the message waits 15,384 cycles
    assert one_colour[short].wait_cycles == 16_384 - 1000
