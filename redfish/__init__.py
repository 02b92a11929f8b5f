"""powersync redfish: a Redfish client on httpx + trio, and a Redfish fleet simulator."""
