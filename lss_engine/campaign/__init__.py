"""Adaptive sampling campaigns (issue 11)."""
