"""The PayFlow incident operator (imported as ``payflow.operator``)."""
