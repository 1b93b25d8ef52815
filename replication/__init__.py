"""Replication: members, the binlog write path, certification, applier — and the MySQL wire protocol to backends."""
