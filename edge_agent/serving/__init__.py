"""Recommendation models: the registry, ONNX sessions, training, shadow evaluation and pulls
from central."""
