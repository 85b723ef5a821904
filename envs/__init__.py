"""Gymnasium environments for tabular learners: validation, encoders, multi-agent environments."""
