"""The command-line tool ``ser-adv`` and its subcommands (each also ``python -m ser_adv_brain.commands.<name>``)."""
