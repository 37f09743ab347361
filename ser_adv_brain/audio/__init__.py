"""Audio: reading any file to mono at the model's rate, fixed lengths, and 16-bit PCM."""
