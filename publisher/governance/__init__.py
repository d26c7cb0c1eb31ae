"""Governance and release automation (DESIGN.md §12, docs/governance.md).

Environment policy, change requests with reviews and a separate atomic apply, scheduled
changes applied exactly once by the forwarder lease holder, flag triggers, progressive
rollouts, and the audit of every step.

Modules, in the order a change meets them:

- ``model``: the records (policy, review, change request, trigger, rollout plan);
- ``policy``: the environment policy and the guard of direct writes;
- ``reviews`` and ``requests``: the review rules and the change-request state machine (pure);
- ``rollout``: what a rollout step writes into a flag (pure);
- ``change_requests``, ``triggers``, ``rollouts``: the operations, on ``core`` (shared
  parsing, audit entries and the governed write);
- ``store`` (the ``GovernanceStore`` protocol and its guarantees), ``redis_store``,
  ``memory_store`` (and ``flagstream.embedded.governance`` for the SQLite store);
- ``scheduler``: due changes and rollout steps, on the lease holder;
- ``http``, ``openapi``, ``cli``: the API routes, their OpenAPI paths, ``flagstream admin``;
- ``install``: wiring it all into the publisher app.
"""
