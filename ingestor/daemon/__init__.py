"""The running daemon: its life from signals to drain (:mod:`~ingestor.daemon.runtime`) and one supervisor per
connector that reconnects it with backoff (:mod:`~ingestor.daemon.supervisor`).  It assembles every other
package: configuration, connectors (through the registry), pipeline, database, derivation and services."""
