"""The daemon's configuration: the root model of the YAML file, loading it with every error at once, and the
registry of installed connector types.

* :mod:`~ingestor.config.model`        ``IngestorConfig``: the whole file, composed of each package's section
* :mod:`~ingestor.config.loader`       ``load_config``: YAML → validated model, or every problem with its position
* :mod:`~ingestor.config.checks`       whole-file checks of the connectors against the plant
* :mod:`~ingestor.config.problems`     ``Problem`` and ``ConfigError``
* :mod:`~ingestor.config.yaml_source`  YAML 1.2 loading that remembers the line and column of every value
* :mod:`~ingestor.config.registry`     connector types found through the ``ingestor.connectors`` entry points
"""

from ingestor.config.loader import load_config
from ingestor.config.model import IngestorConfig
from ingestor.config.problems import ConfigError, Problem

__all__ = ["ConfigError", "IngestorConfig", "Problem", "load_config"]
