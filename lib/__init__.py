"""TabTransformer income classifier on the UCI Adult census data.

The notebooks call this package; each module is one stage of the model's life:
``data`` (load, verify, parse, split), ``features`` (encoding raw records),
``model`` (the Keras TabTransformer and its losses), ``training``, ``tuning``
(the Optuna study), ``evaluation``, ``artifact`` (save and load the model with
everything needed to score a raw record), ``storage`` (where the study lives),
``serving`` (the SageMaker inference contract) and ``aws`` (SageMaker jobs and the
CloudFormation stack).
"""

__version__ = "0.1.0"
