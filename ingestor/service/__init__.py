"""What the daemon runs beside the pipeline for the people and systems around it: how logs are rendered
(:mod:`~ingestor.service.logs`), the scheduled refresh of the materialized views
(:mod:`~ingestor.service.refresh`), the watch on TimescaleDB's background jobs (:mod:`~ingestor.service.jobs`)
and systemd's readiness, status and watchdog notifications (:mod:`~ingestor.service.notify`).
The HTTP endpoints are :mod:`ingestor.api`."""
