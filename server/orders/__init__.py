"""Orders: placing them exactly once without overselling, history, cancelling, and the push to Zoho."""
