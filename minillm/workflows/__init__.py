"""Workflows: what each ``minillm`` command does, as one Python call each."""
