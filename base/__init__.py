"""The shared base: settings, and the Kafka and MQTT client setup every service uses.

The lowest layer: it imports no other StrideWatch package (docs/architecture.md).
"""
