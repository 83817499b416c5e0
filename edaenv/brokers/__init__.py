"""Broker adapters: one small Protocol (base.py), one flat module per broker."""
