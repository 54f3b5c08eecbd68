"""Lookalike trainer: images -> metric-learning encoder -> model directory."""
