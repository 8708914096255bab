"""The simulator's rule for `wse.ssd_scan` (Mamba-2), registered into `simulator.translate`."""

from __future__ import annotations

from core.geometry import Rect
from simulator import cost
from simulator.tasks import PlacedOp, Translation, Value, pe_block
from simulator.translate import TRANSLATE


@TRANSLATE("ssd_scan")
def _ssd_scan(t: Translation, op: PlacedOp) -> Value:
    """Heads (then a head's channels) split across PEs, each running its chunks in order
    (`cost.ssd_scan`); every PE of a group of heads gets that group's B_t and C_t by multicast,
    streamed alongside."""
    batch, length, heads, width = t.specs[op.arg(0)].shape
    groups, state = t.specs[op.arg(3)].shape[2:]
    chunk = op.ins.attrs["chunk"]
    cm = t.cm(t.specs[op.arg(0)])
    most = batch * heads * width

    def on(rect: Rect) -> cost.Cost:
        parts = min(most, rect.num_pes)
        return cost.ssd_scan(cm, length, batch * heads, width, state, chunk, parts=parts)

    home = t.home(op, lambda r: on(r).cycles)
    pes = min(most, home.num_pes)
    scan = t.compute(op, home, on(home), pes)
    bc_deps = tuple(d for i in (3, 4) for d in t.operand(op.arg(i), home, op.labels))
    nbytes = 2 * state * length * cm.element_bytes
    group = max(1, pes // (batch * groups))
    bc = t.spread(cm, pe_block(home, pes), group, nbytes, bc_deps, "bc", op.labels)
    return Value(scan.frontier + bc, home, 0, "act")
