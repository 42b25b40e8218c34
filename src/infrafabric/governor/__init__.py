"""governor: see issue plan (not yet implemented)."""
