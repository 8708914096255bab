"""Simulation of placed `wse` programs: `simulator.functional` executes one tile by tile,
reading every weight back from a per-PE SRAM image, and checks the placement numerically."""
