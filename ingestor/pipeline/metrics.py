"""Prometheus metrics of the pipeline (queue, spool, writer), defined once for the process.

Names follow Prometheus conventions (``_total`` for counters, base units).  Labels are low-cardinality:
connector names and fixed reason strings, never tag or equipment codes.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

READINGS_RECEIVED = Counter(
    "ingestor_readings_received_total", "Readings accepted from a connector into the pipeline", ["connector"])
QUEUE_FULL_WAITS = Counter(
    "ingestor_queue_full_waits_total",
    "Times a connector had to wait because the in-memory queue was full (backpressure)", ["connector"])
QUEUE_READINGS = Gauge("ingestor_queue_readings", "Readings waiting in the in-memory queue")
OLDEST_UNWRITTEN_AGE = Gauge(
    "ingestor_oldest_unwritten_reading_age_seconds", "Age of the oldest reading not yet committed")
READINGS_SPOOLED = Counter("ingestor_readings_spooled_total", "Readings made durable in the local spool")
SPOOL_BYTES = Gauge("ingestor_spool_bytes", "Bytes of unwritten batches in the spool")
SPOOL_FREE_BYTES = Gauge(
    "ingestor_spool_free_bytes", "Free bytes of the spool's file system (the spool stops short of them by a reserve)")
SPOOL_READINGS = Gauge("ingestor_spool_readings", "Readings in the spool not yet committed to the database")
SPOOL_SECONDS = Histogram(
    "ingestor_spool_append_seconds", "Time to store (and fsync) one batch in the spool",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
READINGS_WRITTEN = Counter("ingestor_readings_written_total", "Readings committed to fact_sensor_event")
BATCHES_WRITTEN = Counter("ingestor_batches_written_total", "Database transactions committed by the writer")
BATCH_SECONDS = Histogram(
    "ingestor_batch_write_seconds", "Time to COPY and commit one database transaction",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
COPY_ERRORS = Counter("ingestor_copy_errors_total",
                      "Batch transactions the database refused (retried); a lost connection is not counted here",
                      ["kind"])
DATABASE_CONNECTION_FAILURES = Counter(
    "ingestor_database_connection_failures_total",
    "Failed connects and connections lost by the writer (the spool keeps the readings)", ["kind"])
READINGS_DEAD_LETTERED = Counter(
    "ingestor_readings_dead_lettered_total", "Readings kept in ingest_dead_letter instead of fact_sensor_event",
    ["reason"])
READINGS_DROPPED = Counter(
    "ingestor_readings_dropped_total", "Readings accepted but not kept, by reason", ["reason"])
DATABASE_UP = Gauge("ingestor_database_up", "1 when the writer's database connection works")
