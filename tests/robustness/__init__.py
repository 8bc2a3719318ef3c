"""A battery of bad inputs: each refused in one line, recorded as it should be, nothing else touched."""
