"""Edge ingestion daemon: shop-floor protocols into TimescaleDB, with OEE and reliability facts."""

__version__ = "0.1.0"
