"""The central database (SQLite by default, PostgreSQL given a DSN): the only collector code
that speaks SQL."""
