"""The kopf operator: ``python -m serflow.operator`` (or ``kopf run -m serflow.operator.handlers``)."""
