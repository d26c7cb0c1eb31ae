"""The benchmark scenarios; each module has ``NAME``, ``add_arguments(parser)`` and
``async run(ctx) -> Result``."""
