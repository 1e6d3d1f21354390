"""The adapted model: its layout, the numpy hot path over lanes, and feature scaling."""
