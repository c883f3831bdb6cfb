"""What every entry point shares: settings and the connection to Temporal (below worker and starter)."""
