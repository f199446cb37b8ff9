"""Derived facts: production and downtime from machine counters and states, for OEE (ISO 22400) and MTBF/MTTR
(ISO 14224).

The derivation reads ``fact_sensor_event`` (the source of truth once the exactly-once pipeline has committed a
reading) and writes ``fact_production`` and ``fact_downtime``.  The same code path serves the daemon's periodic
run (:mod:`ingestor.derive.task`) and ``ingestor derive --from --to`` (:mod:`ingestor.cli.derive`).

* :mod:`~ingestor.derive.config`   the ``derivation:`` section of the YAML
* :mod:`~ingestor.derive.plan`     one machine's roles resolved to database ids
* :mod:`~ingestor.derive.series`   a role tag's readings in a window
* :mod:`~ingestor.derive.counters` counter deltas that survive 16/32/64-bit wraps and PLC resets
* :mod:`~ingestor.derive.segments` the shift calendar in absolute time (DST-correct), cells and segments
* :mod:`~ingestor.derive.states`   stop intervals, reasons and micro-stops from the state tag
* :mod:`~ingestor.derive.facts`    one window of one machine: readings in, fact rows out (no I/O)
* :mod:`~ingestor.derive.store`    reading windows from the database and writing facts idempotently
* :mod:`~ingestor.derive.engine`   which windows need deriving (late data, stops in progress) and doing it
* :mod:`~ingestor.derive.task`     the daemon's periodic derivation and data-quality export

docs/oee.md explains the definitions and every departure from the schema document.  This package's
``__init__`` imports nothing heavy: ``ingestor.config`` imports the config model from here.
"""
