"""`make bench`: the welcome-mail benchmarks against the real RabbitMQ, Postfix's smtp-sink, Celery, Dramatiq and
minimal "ceiling" programs. Run as `python -m tests.bench` from the repository root (see `__main__.py`).

Layout: `__main__` is the driver; `sections/` holds one module per measurement, each returning the typed records of
`results.py`; `contenders/` one module per contender behind the interfaces of `contenders/base.py`; `ratios.py`
the one within-round ratio; `goals.py`, `report.py` and `publish.py` turn results.json into RESULTS.md and the
README's table. The pure modules (results, ratios, goals, report, publish) import nothing outside the standard
library, so `make bench-report` and the unit tests run without the bench's venv.
"""
