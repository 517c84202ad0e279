"""Inference: the one way to ask a COMM model.

`assistant.Assistant` holds a loaded model with the chat format its checkpoint records (`prompts`), turns
images into pixels and questions into answers (`generation`: generate arguments, answer length, pad/eos,
batches; `streaming`: text as it is generated); `chat.ChatSession` keeps a conversation; `loading` reads a
checkpoint; `flags` are the command-line options every command that asks a model shares.
"""
