"""The HTTP side of the ingestor, for people and systems around it: the specification's REST API (analytics),
live WebSocket events, the operator page, and the operator's ``/metrics``, ``/healthz`` and ``/readyz``.

One FastAPI application (:func:`~ingestor.api.app.create_app`) with one router per resource under
:mod:`ingestor.api.routes`.  The daemon serves it inside its own event loop (:class:`~ingestor.api.server.ApiServer`);
``ingestor api`` serves the same application without connectors, for a central process reading a shared
database.  docs/api.md describes every endpoint.
"""
