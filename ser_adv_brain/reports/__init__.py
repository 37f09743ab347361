"""Reports: tables and CSV files of every evaluation, the pictures, the model card."""
