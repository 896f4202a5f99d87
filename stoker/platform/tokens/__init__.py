"""API tokens: named bearer tokens with rights, stored hashed in SQL and projected into Redis."""
