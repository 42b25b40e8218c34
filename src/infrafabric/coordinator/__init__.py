"""coordinator: see issue plan (not yet implemented)."""
