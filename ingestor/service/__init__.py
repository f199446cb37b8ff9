"""What the daemon runs beside the pipeline for the people and systems around it: the HTTP endpoints
(``/metrics``, ``/healthz``, ``/readyz``; :mod:`~ingestor.service.http`), how logs are rendered
(:mod:`~ingestor.service.logs`) and the scheduled refresh of the materialized views
(:mod:`~ingestor.service.refresh`)."""
