"""The ``pipeline:`` section of the YAML: batching, the memory bound, and the durable spool."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ingestor.contract import ByteSize, Duration, StrictModel


class PipelineConfig(StrictModel):
    """``pipeline:`` batching, memory bound, the durable spool."""

    batch_rows: int = Field(default=5000, ge=1, le=1_000_000, description="most readings in one spool batch")
    batch_age: Duration = Field(default=1.0, gt=0, description="longest a reading waits for its batch to fill")
    queue_size: int = Field(default=100_000, ge=1, description="most readings held in memory before the spool")
    spool_dir: Path = Field(default=Path("/var/lib/ingestor/spool"), description="the local store-and-forward spool")
    spool_max_bytes: ByteSize = Field(default=ByteSize(2 * 2**30), ge=2**20, description="the spool's size limit")
    spool_full: Literal["backpressure", "drop_oldest", "drop_newest"] = Field(
        default="backpressure",
        description="backpressure: stop taking readings (connectors wait, MQTT stops acknowledging); "
                    "drop_oldest / drop_newest: make room by dropping, counted by reason")
    durability: Literal["batch", "interval"] = Field(
        default="batch", description="batch: fsync every batch before acknowledging it; "
                                     "interval: fsync every fsync_interval and acknowledge after it")
    fsync_interval: Duration = Field(default=1.0, gt=0)
    write_rows: int = Field(default=50_000, ge=1, description="most rows per database transaction (catching up)")
    shutdown_timeout: Duration = Field(
        default=30.0, ge=0, description="how long a shutdown keeps writing the spool to the database; what is "
                                        "left stays in the spool for the next start")
