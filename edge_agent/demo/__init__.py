"""The demo site: the simulator, the real sales it replays, and the demo runner."""
