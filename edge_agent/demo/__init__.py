"""The demo site: the simulator, the Ta Feng catalogue it sells from, and the demo runner."""
