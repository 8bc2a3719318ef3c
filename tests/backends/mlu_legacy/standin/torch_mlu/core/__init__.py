"""EMULATING STAND-IN — not Cambricon's code; records calls and emulates the device's numerics."""
