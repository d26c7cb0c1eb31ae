"""The local development stack: a real single-node Kafka (KRaft) and a Redis, on loopback.

``flagstream stack up|down|status`` (see :mod:`flagstream.stack.cli`) runs the shared stack;
:class:`~flagstream.stack.kafka.KafkaBroker` and :class:`~flagstream.stack.redis.RedisServer`
run private instances that fault tests may stop, kill and restart.
"""

from flagstream.stack.errors import StackError

__all__ = ["StackError"]
