"""Evaluation of trained variants: embedding similarity scores, votes and the proof of learning.

Like `adapters/`, this package never imports gradio.
"""
