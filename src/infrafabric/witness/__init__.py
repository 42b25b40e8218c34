"""witness: see issue plan (not yet implemented)."""
