"""The command-line tool ``ser-adv`` and its subcommands; each module is also ``python -m ser_adv_brain.commands.<name>``."""
