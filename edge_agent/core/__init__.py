"""The pure core: plain functions and dataclasses, no I/O, no clock, no globals."""
