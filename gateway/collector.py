"""The garbage collector of a long-running gateway process (`gateway serve`, `gateway worker`).

Once a process has started, what imports and start-up made (modules, classes, functions, compiled
statements: about 90,000 objects) lives as long as the process, yet CPython's collector walks all of it
again at every full collection, and a message's work (ORM rows, dialogue values, HTTP objects) makes
enough objects that its youngest generation fills every 700 allocations. Measured on the SMS path
(docs/benchmarks.md, "The collector"), collection took about 12 % of the serve process's CPU.

`settle()`, called once start-up is done, moves everything alive out of the collector's sight
(`gc.freeze`) and collects the young generation every 50,000 allocations instead of 700, so the cycles
a message leaves behind are found in fewer, larger passes. Nothing is kept that would otherwise be
freed: reference counting still frees every object without a cycle at once, and cycles are still
collected, later. What is frozen is never collected, so only start-up's objects are: those live as long
as the process anyway. Tests and embedding code that call `create_app` are not affected.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

YOUNG_THRESHOLD = 50_000  # allocations (less deallocations) between collections of the youngest generation
MIDDLE_THRESHOLD = 20  # young collections between collections of the middle generation
OLD_THRESHOLD = 10  # middle collections between full collections (CPython also waits for 25 % growth)


def settle() -> None:
    """Freeze what start-up made and space the collections out (see the module docstring)."""
    gc.collect()  # start-up's own garbage goes now, not into the frozen generation
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
    log.info("start-up objects frozen for the collector", extra={"frozen_objects": gc.get_freeze_count()})
