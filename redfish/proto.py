"""The sans-I/O Redfish core: reply parsing (filled in by the next commit)."""
