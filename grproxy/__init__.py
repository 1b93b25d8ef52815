"""grproxy: the process — configuration, CLI, MySQL-protocol front ends, sandbox."""
