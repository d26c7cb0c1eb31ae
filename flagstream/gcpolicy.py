"""The cyclic garbage collector's settings for a long-running server process.

CPython collects its youngest generation every 700 net container allocations and, every
100 of those, the whole heap. A publisher decoding a bulk request of 1,000 flags allocates
hundreds of thousands of containers at once, and its heap holds what it caches (recent
items, compiled routes, the modules of aiohttp, redis, aiokafka, pydantic): in a 10,000-flag
import the collector ran ~980 times and spent 0.77 s, 7 full collections of ~95 ms each,
a quarter of the publisher's CPU (BENCHMARKS.md, "Issue 18, third pass").

Rules:

1. **Freeze what startup made.** Once the process is set up (``tune_collector`` is called
   after the server is listening), everything alive is moved to the permanent generation
   (``gc.freeze``): modules, classes and settings are never traversed again. Garbage from
   startup is collected first, so it is not kept forever.
2. **A larger youngest generation.** The first threshold becomes ``gen0_threshold``
   (20,000 by default); the older generations keep their ratios (10, 10). Reference
   counting still frees every acyclic object at once; only reference cycles (a failed
   request's traceback, a finished task's callbacks) wait longer, at most ``gen0_threshold``
   containers of them.
3. **Opt-out.** ``gen0_threshold=0`` leaves the collector exactly as Python configures it.
"""

from __future__ import annotations

import gc

__all__ = ["DEFAULT_GEN0_THRESHOLD", "tune_collector"]

DEFAULT_GEN0_THRESHOLD = 20_000


def tune_collector(gen0_threshold: int = DEFAULT_GEN0_THRESHOLD) -> bool:
    """Apply the module's rules; False (nothing changed) when ``gen0_threshold`` is 0."""
    if gen0_threshold <= 0:
        return False
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
    return True
