"""Scanning a user's model file for code (Lambda layers, Python callbacks, file ops) before anything loads it.

Imports only `core` and `errors`: a scan never loads the model it reads."""
