"""What was spent: the ledger (SQLite / PostgreSQL) and the session and user budgets."""
