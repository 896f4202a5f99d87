"""The SQL ledger: one row per invocation and one per attempt, written in batches."""
