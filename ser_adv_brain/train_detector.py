"""``python -m ser_adv_brain.train_detector``, kept from before the command-line tool: it is ``ser-adv detector``
(``ser_adv_brain.commands.detector``)."""

from ser_adv_brain.commands.detector import main

if __name__ == "__main__":
    main()
