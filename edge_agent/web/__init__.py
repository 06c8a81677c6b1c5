"""The staff screens' web app: page, JSON API, push stream, health and metrics."""
