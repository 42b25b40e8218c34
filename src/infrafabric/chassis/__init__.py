"""chassis: see issue plan (not yet implemented)."""
