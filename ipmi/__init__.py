"""powersync ipmi: a native IPMI v2.0 (RMCP+) client on trio, and a BMC fleet simulator."""
