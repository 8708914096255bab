"""MLIR dialects defined by Wafer."""
