"""``type: tick``: every ``interval`` each tag's counter goes up by one.  A complete connector in one file,
written against ``ingestor.contract`` only, as a plugin for a protocol this repository does not ship would be."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Literal

from pydantic import Field

from ingestor.contract import (
    BuildContext,
    ConnectorConfig,
    ConnectorType,
    Duration,
    Reading,
    ReadingSink,
    TagConfig,
    TagRef,
    now_us,
)


class TickConfig(ConnectorConfig):
    type: Literal["tick"]
    interval: Duration = Field(default=0.1, gt=0)
    tags: list[TagConfig] = Field(min_length=1)

    def tag_refs(self) -> Iterable[TagRef]:
        for index, tag in enumerate(self.tags):
            yield TagRef(("tags", index), tag.equipment, tag.parameter, tag.unit)


class Tick:
    def __init__(self, config: TickConfig) -> None:
        self.name = config.name
        self._config = config
        self._count = 0

    async def connect(self) -> None:
        return None

    async def run(self, sink: ReadingSink) -> None:
        while True:
            self._count += 1
            stamp = now_us()
            await sink.put([Reading(t.equipment, t.parameter, float(self._count), stamp, t.unit)
                            for t in self._config.tags])
            await asyncio.sleep(self._config.interval)

    async def close(self) -> None:
        return None


def build(config: TickConfig, context: BuildContext) -> Tick:
    return Tick(config)


CONNECTOR = ConnectorType(config=TickConfig, build=build)
