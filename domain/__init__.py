"""Pure domain types and policies: imported by everything, imports nothing of ours.

No I/O, no clock, no randomness here, so that workflows can run these functions
deterministically and tests can property-check them.
"""
