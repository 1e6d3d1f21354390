"""The wire format: event, prediction, query, answer and dead-letter contracts, and the
validating decoders."""
