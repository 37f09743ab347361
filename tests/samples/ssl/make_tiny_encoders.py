"""Writes the three tiny random encoders beside this file: ``python tests/samples/ssl/make_tiny_encoders.py``.

The self-supervised recipes' debug runs (``tests/recipes/EmoDB.csv``) load them with
``--encoder_source=tests/samples/ssl/<family>``, offline. Random weights, the sizes of
``ser_adv_brain.models.self_supervised.TINY_ENCODER``: they test code paths, not what an encoder learnt.
"""

import os

from ser_adv_brain.models.self_supervised import ENCODER_CLASSES, TINY_ENCODER, random_encoder_folder

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    for family in ENCODER_CLASSES:
        print(random_encoder_folder(family, os.path.join(here, family), **TINY_ENCODER))
