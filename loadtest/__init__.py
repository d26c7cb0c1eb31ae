"""Load generator and benchmark scenarios: ``flagstream loadtest SCENARIO``.

See docs/loadtest.md.
"""
