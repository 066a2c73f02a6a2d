"""Running Courier's service processes: start-up and signals, per-type tasks,
``/metrics`` for services without a web app, API keys for the HTTP services,
the local stack's supervisor (``courier up``) and the fault-injection seam."""
