"""The JSON Schemas of deployplan, installed as the package data of `runner.schemas`."""
