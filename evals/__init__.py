"""Evaluation of trained variants: embedding similarity scores, votes, eval sets and the proof of learning.

Like `adapters/`, this package never imports gradio.
"""
