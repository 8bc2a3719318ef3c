"""RECORDING STAND-IN — not Cambricon's code; records calls so tests can check the sequence."""
