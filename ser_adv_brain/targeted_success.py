"""``python -m ser_adv_brain.targeted_success``, kept from before the command-line tool: it is ``ser-adv targeted``
(``ser_adv_brain.commands.targeted``)."""

from ser_adv_brain.commands.targeted import main

if __name__ == "__main__":
    main()
