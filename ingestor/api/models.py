"""The base of every response body: camelCase JSON, as the specification shows, from snake_case Python."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """A response body.  Fields are snake_case in Python and camelCase on the wire (FastAPI serialises
    response models by alias)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)
