"""Data: manifests and speaker splits for any corpus, SpeechBrain datasets, input validation, the synthetic corpus."""
