"""Rectangles of PEs on the wafer's grid (x is the column, y the row; row 0 is the north edge)."""

from __future__ import annotations

from typing import NamedTuple


class Rect(NamedTuple):
    """A rectangle of PEs: columns x .. x+width-1, rows y .. y+height-1.

    A tuple, so it unpacks as `x, y, width, height` and serialises as the `[x, y, w, h]`
    region attributes of the placed IR."""

    x: int
    y: int
    width: int
    height: int

    @property
    def num_pes(self) -> int:
        return self.width * self.height

    @property
    def slices(self) -> tuple[slice, slice]:
        """Index of the rectangle in a (rows, columns) array."""
        return slice(self.y, self.y + self.height), slice(self.x, self.x + self.width)

    def is_valid(self) -> bool:
        """At least one PE, inside the grid's non-negative quadrant."""
        return self.width > 0 and self.height > 0 and self.x >= 0 and self.y >= 0

    def overlaps(self, other: Rect) -> bool:
        return (
            self.x < other.x + other.width
            and other.x < self.x + self.width
            and self.y < other.y + other.height
            and other.y < self.y + self.height
        )

    def contains(self, other: Rect) -> bool:
        return (
            self.x <= other.x
            and self.y <= other.y
            and other.x + other.width <= self.x + self.width
            and other.y + other.height <= self.y + self.height
        )

    def hops_to(self, other: Rect) -> int:
        """Manhattan distance in PE hops between the two rectangles' centres."""
        return round(abs(2 * (self.x - other.x) + self.width - other.width) / 2) + round(
            abs(2 * (self.y - other.y) + self.height - other.height) / 2
        )

    def __str__(self) -> str:
        return f"{self.width}x{self.height}@({self.x},{self.y})"


def l_route(src: Rect, dst: Rect) -> list[tuple[str, Rect]]:
    """The links of an L-shaped route between two rectangles' centres, as (direction, the PEs
    whose links towards it are used): along the source's rows, then the destination's
    columns (E: x+1, S: y+1)."""
    sx, sy = src.x + src.width // 2, src.y + src.height // 2
    dx, dy = dst.x + dst.width // 2, dst.y + dst.height // 2
    legs = []
    if sx != dx:
        legs.append(("E" if dx > sx else "W", Rect(min(sx, dx), src.y, abs(dx - sx), src.height)))
    if sy != dy:
        legs.append(("S" if dy > sy else "N", Rect(dst.x, min(sy, dy), dst.width, abs(dy - sy))))
    return legs
