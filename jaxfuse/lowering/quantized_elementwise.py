"""Quantized (int8 / uint8 / int16) rules: see quantized_array.py for the conventions."""
