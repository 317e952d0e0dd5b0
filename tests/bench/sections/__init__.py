"""One module per measurement; each `run(bed, settings, ...)` returns the typed records of `results.py`."""
