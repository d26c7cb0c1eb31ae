"""flagstream glue: the ``flagstream`` command, the local Kafka + Redis stack, embedded mode."""
