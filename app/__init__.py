"""Lookalike service: model directory + uploads -> FastAPI + FAISS."""
