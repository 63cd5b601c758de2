"""Quality (against a fixed judge) and cost (measured on the device) of any method."""
