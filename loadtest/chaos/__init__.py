"""``flagstream loadtest chaos``: the whole system under a seeded schedule of faults, checked
for no loss, monotonicity, convergence, bounded relay memory and secret-free logs.

Modules, in the order a run meets them: ``cli`` (options), ``run`` (the order of a run),
``cluster`` (own Kafka and Redis, Kafka links through ``proxy``, publishers, relays),
``writers`` and ``observers`` (load and what watches it, incl. ``sdk_client``), ``schedule``
and ``faults`` (what breaks, when), ``invariants`` (the verdict). docs/reliability.md
describes each invariant and how it is checked.
"""
