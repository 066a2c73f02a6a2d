"""Transport: the only package that imports nats."""
