"""The path of a reading from a connector to the database, exactly once:

connector → :mod:`~ingestor.pipeline.queue` (memory, bounded) → :mod:`~ingestor.pipeline.spooler` (batches by
size and age, encodes once, acknowledges when durable) → :mod:`~ingestor.pipeline.spool` (SQLite, durable) →
:mod:`~ingestor.pipeline.writer` (oldest first; COPY and the spool's watermark in one transaction) → database.

:mod:`~ingestor.pipeline.config` is the ``pipeline:`` section, :mod:`~ingestor.pipeline.metrics` its Prometheus
metrics.  docs/pipeline.md describes the guarantees and the measurements.
"""
