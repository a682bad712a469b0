"""The PayFlow payment API (imported as ``payflow.app``)."""
