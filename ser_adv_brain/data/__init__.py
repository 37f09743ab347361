"""Data: corpus-independent manifests and speaker splits, SpeechBrain datasets, input validation, the synthetic corpus."""
