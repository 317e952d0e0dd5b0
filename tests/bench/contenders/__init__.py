"""The contenders, one module each, behind the two interfaces of `base.py`: a consumer (drains signups from its
queue into an SMTP server) and an app (answers POST /v1/signups by publishing). Ours in `ours.py`; Celery,
Dramatiq and the minimal ceiling programs (tests/bench/peers/) in theirs."""
