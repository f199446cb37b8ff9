"""OPC UA: subscriptions and polled reads from OPC UA servers (asyncua), and browsing for a tag map.

``config`` holds the configuration model (imported by the registry; no asyncua import), ``connector`` the
connector, ``security`` the certificate handling, ``discover`` the ``ingestor discover opcua`` command.
"""

from connectors.opcua.config import OpcUaConfig

__all__ = ["OpcUaConfig"]
