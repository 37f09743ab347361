"""``python -m ser_adv_brain.transfer``, kept from before the command-line tool: it is ``ser-adv transfer``
(``ser_adv_brain.commands.transfer``)."""

from ser_adv_brain.commands.transfer import main

if __name__ == "__main__":
    main()
