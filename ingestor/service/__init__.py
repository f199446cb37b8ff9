"""What the daemon runs beside the pipeline for the people and systems around it: how logs are rendered
(:mod:`~ingestor.service.logs`) and the scheduled refresh of the materialized views
(:mod:`~ingestor.service.refresh`).  The HTTP endpoints are :mod:`ingestor.api`."""
