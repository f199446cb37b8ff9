"""The protocol connectors of this repository: one package (or module) per protocol.

Each exposes ``CONNECTOR``, an :class:`ingestor.contract.ConnectorType`, registered under the entry-point group
``ingestor.connectors`` in ``pyproject.toml``; the daemon finds them there exactly as it finds a connector
installed from another package.  Connectors import only :mod:`ingestor.contract` from the daemon (checked by
the import contracts in ``pyproject.toml``); :mod:`connectors.polling` is the poller they share.
"""
