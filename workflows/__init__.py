"""Orchestration only: deterministic, no I/O, no boto3, no clock, no randomness."""
