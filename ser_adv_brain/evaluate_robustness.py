"""``python -m ser_adv_brain.evaluate_robustness``, kept from before the command-line tool: it is ``ser-adv evaluate``
(``ser_adv_brain.commands.evaluate``)."""

from ser_adv_brain.commands.evaluate import main

if __name__ == "__main__":
    main()
