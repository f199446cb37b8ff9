"""Protocol simulators that replay PLC traffic (OPC UA and Modbus servers, an MQTT publisher).

They depend on neither ``ingestor`` nor ``connectors``: they are stand-ins for real machines, used by the
tests as fixtures and by the demo as sources.
"""
