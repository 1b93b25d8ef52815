"""Router: client sessions, read/write split, consistency waits, backend pools."""
