"""gamedays."""
