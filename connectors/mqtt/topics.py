"""From a received topic to what it means: which equipment, which parameter, which unit, which parser.

Exact-topic tags are one dictionary lookup.  Template subscriptions are tried in configuration order
(overlapping filters are refused at load, so at most one matches).  Topics repeat endlessly (equipment times
parameter), so every answer, including "unknown", is cached; the cache is cleared if it ever grows past
``CACHE_LIMIT`` distinct topics, which bounds memory against a flood of random topic names.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import NamedTuple

from connectors.mqtt.config import MqttConfig, SubscriptionConfig, format_names, split_levels, template_levels
from connectors.mqtt.payloads import PayloadParser
from connectors.mqtt.sparkplug import SparkplugRoute

CACHE_LIMIT = 100_000


class Destination(NamedTuple):
    """What a topic means; ``equipment``/``parameter`` are None when the payload must name them."""

    equipment: str | None
    parameter: str | None
    unit: str | None
    parser: PayloadParser
    sparkplug: SparkplugRoute | None = None
    """Set for ``format: sparkplug_b``: the equipment and parameter come from each metric, not the topic."""


def _expression(expression: str | None) -> Callable[[dict[str, str]], str | None]:
    if expression is None:
        return lambda levels: None
    names = format_names(expression)
    if not names:
        return lambda levels: expression
    if expression == "{" + names[0] + "}":
        name = names[0]
        return lambda levels: levels[name]
    return lambda levels: expression.format(**levels)


class _Template:
    __slots__ = ("equipment", "length", "levels", "multi", "parameter", "parser", "sparkplug", "unit")

    def __init__(self, sub: SubscriptionConfig, parser: PayloadParser) -> None:
        self.levels = template_levels(sub.topic)
        self.multi = bool(self.levels) and self.levels[-1][0] == "#"
        if self.multi:
            self.levels = self.levels[:-1]
        self.length = len(self.levels)
        self.equipment = _expression(sub.equipment_expression())
        self.parameter = _expression(sub.parameter_expression())
        self.unit = sub.unit
        self.parser = parser
        self.sparkplug = None
        if sub.payload.format == "sparkplug_b":
            self.equipment = self.parameter = _expression(None)
            self.sparkplug = SparkplugRoute(sub.equipment_expression() or "{device}",
                                            sub.parameter_expression() or "{metric}", sub.unit)

    def match(self, parts: list[str]) -> Destination | None:
        if len(parts) < self.length or (not self.multi and len(parts) != self.length):
            return None
        captured: dict[str, str] = {}
        for (kind, text), part in zip(self.levels, parts, strict=False):
            if kind == "literal":
                if part != text:
                    return None
            elif kind == "name":
                if not part:
                    return None  # an empty level names nothing
                captured[text] = part
        return Destination(self.equipment(captured), self.parameter(captured), self.unit, self.parser,
                           self.sparkplug)


class TopicRouter:
    """Resolves topics to destinations, with a bounded cache."""

    def __init__(self, config: MqttConfig, known_equipment: Collection[str] | None = None,
                 known_units: Collection[str] | None = None) -> None:
        def parser(route: object) -> PayloadParser:
            return PayloadParser(route.payload, known_equipment, known_units)  # type: ignore[attr-defined]

        self._exact = {tag.topic: Destination(tag.equipment, tag.parameter, tag.unit, parser(tag))
                       for tag in config.tags}
        self._templates = [_Template(sub, parser(sub)) for sub in config.subscriptions]
        self._cache: dict[str, Destination | None] = {}

    def route(self, topic: str) -> Destination | None:
        try:
            return self._cache[topic]
        except KeyError:
            pass
        found = self._exact.get(topic)
        if found is None:
            parts = split_levels(topic)
            for template in self._templates:
                found = template.match(parts)
                if found is not None:
                    break
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[topic] = found
        return found
