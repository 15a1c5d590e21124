"""The kopf operator: ``python -m serflow.controller`` (or ``kopf run -m serflow.controller.handlers``)."""
