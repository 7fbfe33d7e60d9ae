"""Where results leave the stream: InfluxDB writers and the alert notifier.

Both are Kafka consumers that commit an offset only after the delivery it stands for
succeeded, so an outage of InfluxDB, MQTT or a push service delays data but loses none.
"""
