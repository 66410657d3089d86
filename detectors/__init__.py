"""Pure statistics for revwatch: numbers in, verdicts out.

No I/O, no clock, no Kafka, no Prometheus, no logging. Event time is always a parameter and
every stateful object round-trips through ``to_state()`` / ``from_state()``.
"""
