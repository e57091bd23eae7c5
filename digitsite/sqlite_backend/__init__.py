"""Django's SQLite backend, with the writers of one database file taking turns in a queue."""
