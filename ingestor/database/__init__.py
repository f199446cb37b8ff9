"""Everything the daemon knows about PostgreSQL and TimescaleDB; nothing here knows the pipeline.

* :mod:`~ingestor.database.config`       the ``database:`` section
* :mod:`~ingestor.database.connection`   connecting, redacting the URL, which errors mean "connection lost"
* :mod:`~ingestor.database.schema`       versioned migrations on three tiers, status, view refresh
* :mod:`~ingestor.database.dimensions`   the plant model upserted into the ``dim_*`` tables
* :mod:`~ingestor.database.prepare`      schema, then dimensions: a database made ready for a configuration
* :mod:`~ingestor.database.copy_format`  ``fact_sensor_event`` rows in the binary COPY format, encoded once
* :mod:`~ingestor.database.watermark`    which spool batches the database holds; one writer per spool
* :mod:`~ingestor.database.commit`       rows, dead letters and watermark in one transaction
* :mod:`~ingestor.database.queries`      the analytics query patterns as SQL files
* :mod:`~ingestor.database.jobs`         TimescaleDB's background jobs, their last run and last error
"""
