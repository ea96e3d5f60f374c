"""The hidden nonlinearities by name: one record each, importable without torch (the command
line checks --nonlin before it imports torch; models/units.py builds the modules)."""
from ..rules import ALL_RULES, STAIRCASE_RULES, STEP_RULES

NONLINS = ("step", "step01", "qrelu", "qrelu5", "relu", "threshrelu")

# hard-threshold name -> (unit family of rules.py, constructor kwargs fixed by the name)
HARD_THRESHOLD = {
    "step": ("step", {"values": "pm1"}),      # sign, +-1 (the paper's "step11")
    "step01": ("step", {"values": "01"}),     # Heaviside, 0/1
    "qrelu": ("staircase", {"steps": 3}),     # 2-bit quantized ReLU (released code: "staircase3")
    "qrelu5": ("staircase", {"steps": 5}),    # 6-level quantized ReLU (released code: "staircase"), ResNet-18
}


def is_hard_threshold(nonlin):
    return nonlin in HARD_THRESHOLD


def rules_for(nonlin):
    """The rule names a known nonlinearity accepts (all names for the full-precision ones)."""
    if nonlin not in HARD_THRESHOLD:
        return ALL_RULES
    return STEP_RULES if HARD_THRESHOLD[nonlin][0] == "step" else STAIRCASE_RULES
