"""flagstream's sans-I/O protocol core: pure functions and frozen dataclasses, no I/O.

Modules (one idea each): ``errors`` (error types), ``keys`` (item keys, Kafka record keys,
partitioning), ``envelope`` (Kafka record value, msgpack), ``position`` (stream positions),
``sse`` (Server-Sent Events encoder and parser), ``ld`` (LaunchDarkly FDv1 payloads),
``model`` (flag/segment validation), ``environment`` (environments and credential hashes),
``evaluation`` (the LaunchDarkly flag evaluation engine, a package: docs/evaluation.md).
See docs/protocol.md.
"""
