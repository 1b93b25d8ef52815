"""Replication: members, capture, certification, applier — and the MySQL wire protocol to backends."""
