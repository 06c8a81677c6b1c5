"""MQTT: the receiver process (paho, ack after commit) and the Mosquitto that the demo and
tests start."""
