"""Audio: reading any file to mono at the model's rate, fixed lengths, 16-bit PCM, and simulated rooms."""
