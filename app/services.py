"""What the routes use, made once per app start (see payflow.app.main)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import AsyncConnectionPool

from payflow.app.cache import LocalCopy, RedisCache, ResponseCache
from payflow.app.faults.controller import FaultController
from payflow.app.faults.injectors import MemoryLeak
from payflow.app.faults.watcher import ConfigMapWatcher
from payflow.app.settings import Settings
from payflow.app.window import RequestWindow
from payflow.app.writer import TransactionWriter


@dataclass
class Services:
    settings: Settings
    pool: AsyncConnectionPool[Any]
    redis: RedisCache
    responses: ResponseCache
    leak: MemoryLeak
    faults: FaultController
    window: RequestWindow
    writer: TransactionWriter
    watcher: ConfigMapWatcher | None = None
    stats_cache: LocalCopy = field(default_factory=LocalCopy)
    started_at: float = field(default_factory=time.time)
