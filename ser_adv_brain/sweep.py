"""``python -m ser_adv_brain.sweep``, kept from before the command-line tool: it is ``ser-adv sweep``
(``ser_adv_brain.commands.sweep``)."""

from ser_adv_brain.commands.sweep import main

if __name__ == "__main__":
    main()
