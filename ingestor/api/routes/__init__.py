"""One router per resource: health and metrics, analytics, events, the operator page."""
