"""Every side effect of Reclaim: AWS calls, database writes. Thin, idempotent activities."""
