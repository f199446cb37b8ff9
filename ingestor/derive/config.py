"""The ``derivation:`` section of the YAML: how often and how production and downtime facts are derived."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ingestor.contract import Duration, StrictModel


class DerivationConfig(StrictModel):
    """``derivation:`` settings.  Which tags are counters and states is said per equipment (``roles``)."""

    enabled: bool = Field(default=True, description="derive facts in the daemon (ingestor derive works regardless)")
    interval: Duration = Field(default=60.0, gt=0, description="how often the daemon derives new facts")
    settle: Duration = Field(
        default=60.0, ge=0,
        description="a segment is derived once it ended this long ago; readings arriving later re-derive it")
    max_segment: Duration = Field(
        default=900.0, ge=0,
        description="longest production record, counted from the shift start (0: cut only at shifts, products "
                    "and orders); shorter records keep dashboards fresh")
    reason_window: Duration = Field(
        default=10.0, ge=0,
        description="a reason code reported up to this long after a stop began names that stop's reason")
    micro_stops: Literal["running", "downtime"] = Field(
        default="running",
        description="stops shorter than the state role's micro_stop: 'running' counts them as operating time "
                    "(a performance loss, no downtime row), 'downtime' records them like any other stop")
    batch: Duration = Field(
        default=86400.0, ge=3600,
        description="most time one equipment derives in one transaction; a backlog is derived batch by batch")
    refresh_oee_after_change: bool = Field(
        default=True, description="refresh view_oee_daily right after a derivation that changed facts")
    check_data_quality: Duration = Field(
        default=300.0, ge=0,
        description="how often check_data_quality() runs and is exported as metrics (0: never)")

    @model_validator(mode="after")
    def _segment_length(self) -> DerivationConfig:
        if 0 < self.max_segment < 60:
            raise ValueError("max_segment must be 0 (no limit) or at least 1m")
        return self


class EventsConfig(StrictModel):
    """``events:`` settings: the live events the daemon emits for the API's WebSocket (docs/api.md "Live
    events").  Downtime events follow the committed state readings; production and quality events follow the
    derivation (``derivation:``) and ``check_data_quality()``."""

    enabled: bool = Field(default=True, description="emit live events and keep live_equipment_state up to date")
    poll_interval: Duration = Field(
        default=1.0, gt=0, le=60,
        description="how often new state readings are looked for when no commit of the writer wakes the task")
    production_interval: Duration = Field(
        default=60.0, ge=1,
        description="a running machine's current shift OEE is sent at least this often (besides after every "
                    "derivation that wrote its production records)")
    scrap_rate_alert: float | None = Field(
        default=0.05, gt=0, le=1,
        description="a quality_alert when a machine's scrap rate in the current shift exceeds this (null: never)")
    scrap_alert_min_parts: int = Field(
        default=20, ge=1, description="the scrap rate is judged only once the shift has this many parts")
    retention: Duration = Field(
        default=86400.0, ge=600,
        description="events are kept this long for clients that resume with since= (then deleted)")
