"""Typed job specs."""
